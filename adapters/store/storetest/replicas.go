package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// AcceptAcrossReplicas sends overlapping batches through several store
// handles on one database at once (replicas, or processes on one SQLite
// file) while readers watch each entity, and checks what ingest must
// keep without a global lock:
//   - each dedup key is stored once, and every duplicate of it, from any
//     handle, answers its seq;
//   - the events of one entity become visible in seq order: a reader that
//     saw seq n never later finds a new event below n (a snapshot folded
//     up to n would skip it forever);
//   - each key's job gen counts every delivery, duplicates included, and
//     every new event has its pending deliveries.
func AcceptAcrossReplicas(t *testing.T, stores ...qsync.Store) {
	ctx := context.Background()
	const entities, senders, batches, perBatch = 3, 3, 12, 5
	var (
		mu      sync.Mutex
		results []accepted
		wg      sync.WaitGroup
	)
	errs := make(chan error, len(stores)*senders+entities)
	done := make(chan struct{})
	var readers sync.WaitGroup
	for e := range entities {
		readers.Add(1)
		go func() {
			defer readers.Done()
			r := ref(int64(e + 1))
			seen := map[int64]bool{}
			var top int64
			for last := false; !last; {
				select {
				case <-done:
					last = true // one read after every batch committed
				default:
				}
				evs, err := stores[e%len(stores)].EventsAfter(ctx, r, 0, 0)
				if err != nil {
					errs <- err
					return
				}
				for _, ev := range evs {
					if !seen[ev.Seq] && ev.Seq < top {
						errs <- fmt.Errorf("%s: seq %d became visible after seq %d", r, ev.Seq, top)
						return
					}
					seen[ev.Seq] = true
				}
				for _, ev := range evs {
					top = max(top, ev.Seq)
				}
			}
		}()
	}
	for h, s := range stores {
		for g := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rnd := rand.New(rand.NewPCG(uint64(h), uint64(g)))
				for b := range batches {
					var ins []qsync.Inbound
					for i := range perBatch {
						e := rnd.IntN(entities) + 1
						dk := fmt.Sprintf("h%d-g%d-b%d-i%d-e%d", h, g, b, i, e)
						if i == 0 {
							dk = fmt.Sprintf("shared-b%d-e%d", b, e) // sent by many senders
						}
						ins = append(ins, in(event(dk, ref(int64(e))), "r", "s"))
					}
					res, err := s.AcceptEvents(ctx, ins, t0)
					if err != nil {
						errs <- fmt.Errorf("handle %d: %w", h, err)
						return
					}
					mu.Lock()
					for i, r := range res {
						results = append(results, accepted{ins[i].Event.DedupKey, ins[i].Event.Ref, r})
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	close(done)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	checkAccepted(t, stores[0], results)
}
