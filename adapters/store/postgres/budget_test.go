package postgres

import (
	"sync/atomic"
	"testing"

	"github.com/qase-sync/qase-sync/adapters/store/storetest"
)

func TestRateBudget(t *testing.T) {
	dsn := testDB(t)
	var n atomic.Int64
	storetest.Budget(t, func(t *testing.T) storetest.RateBudget { return open(t, schemaDSN(t, dsn, 1000+n.Add(1))) })
}
