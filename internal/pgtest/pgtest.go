// Package pgtest gives tests a throwaway PostgreSQL database: created for
// the test, dropped when it ends. Tests skip when the server is
// unreachable, unless QASE_SYNC_REQUIRE_POSTGRES=1 demands it (CI).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// AdminDSN is the server to create databases on: QASE_SYNC_TEST_POSTGRES_DSN
// (or the older QASE_SYNC_TEST_POSTGRES), else the local server as postgres.
func AdminDSN() string {
	for _, v := range []string{"QASE_SYNC_TEST_POSTGRES_DSN", "QASE_SYNC_TEST_POSTGRES"} {
		if dsn := os.Getenv(v); dsn != "" {
			return dsn
		}
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// Database creates a fresh database named prefix_<random> and returns its
// DSN; it is dropped (connections forced closed) when the test ends.
func Database(t testing.TB, prefix string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminDSN())
	if err != nil {
		if os.Getenv("QASE_SYNC_REQUIRE_POSTGRES") == "1" {
			t.Fatalf("PostgreSQL required but unreachable: %v", err)
		}
		t.Skipf("PostgreSQL unreachable (%v); set QASE_SYNC_REQUIRE_POSTGRES=1 to fail instead", err)
	}
	defer admin.Close(context.Background())
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := prefix + "_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, AdminDSN())
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(AdminDSN())
	if err != nil {
		t.Fatalf("admin DSN: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}
