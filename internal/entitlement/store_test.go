package entitlement_test

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/entitlement"
	"github.com/busdk/bus-integration-codex/internal/testutil/pgtest"
	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
)

// storeSuite is the behaviour every Store shares. open returns a store on
// one namespace; two stores opened on one namespace share their counters
// (replicas) when shared is true.
func storeSuite(t *testing.T, shared bool, open func(t *testing.T, ns string) entitlement.Store) {
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	rpm := func(key string, limit int64) entitlement.Counter {
		return entitlement.Counter{Key: key, Limit: limit, Cost: 1, Expires: exp}
	}
	budget := func(key string, limit int64) entitlement.Counter {
		return entitlement.Counter{Key: key, Limit: limit, Expires: exp}
	}
	charge := func(key string, n int64) entitlement.Counter {
		return entitlement.Counter{Key: key, Cost: n, Expires: exp}
	}
	admit := func(t *testing.T, s entitlement.Store, cs ...entitlement.Counter) ([]int64, int) {
		t.Helper()
		v, refused, err := s.Admit(ctx, cs)
		if err != nil {
			t.Fatal(err)
		}
		return v, refused
	}

	t.Run("RequestsUpToTheLimit", func(t *testing.T) {
		s := open(t, "rpm")
		for i := int64(1); i <= 3; i++ {
			if v, refused := admit(t, s, rpm("k", 3)); refused != -1 || !reflect.DeepEqual(v, []int64{i}) {
				t.Fatalf("admission %d: values %v, refused %d", i, v, refused)
			}
		}
		if v, refused := admit(t, s, rpm("k", 3)); refused != 0 || !reflect.DeepEqual(v, []int64{3}) {
			t.Fatalf("over the limit: values %v, refused %d", v, refused)
		}
		// Another key is another counter.
		if v, refused := admit(t, s, rpm("other", 3)); refused != -1 || v[0] != 1 {
			t.Fatalf("other key: values %v, refused %d", v, refused)
		}
	})
	t.Run("BudgetSpentAfterCharges", func(t *testing.T) {
		s := open(t, "budget")
		if v, refused := admit(t, s, budget("b", 10)); refused != -1 || v[0] != 0 {
			t.Fatalf("fresh budget: values %v, refused %d", v, refused)
		}
		if err := s.Add(ctx, []entitlement.Counter{charge("b", 9)}); err != nil {
			t.Fatal(err)
		}
		if v, refused := admit(t, s, budget("b", 10)); refused != -1 || v[0] != 9 {
			t.Fatalf("one token left: values %v, refused %d", v, refused)
		}
		// The request that crosses the budget was admitted; its charge
		// takes the counter past the limit, and the next is refused.
		if err := s.Add(ctx, []entitlement.Counter{charge("b", 5)}); err != nil {
			t.Fatal(err)
		}
		if v, refused := admit(t, s, budget("b", 10)); refused != 0 || v[0] != 14 {
			t.Fatalf("spent budget: values %v, refused %d", v, refused)
		}
	})
	t.Run("RefusalChangesNothing", func(t *testing.T) {
		s := open(t, "atomic")
		if err := s.Add(ctx, []entitlement.Counter{charge("day", 10), charge("month", 3)}); err != nil {
			t.Fatal(err)
		}
		v, refused := admit(t, s, budget("month", 100), budget("day", 10), rpm("minute", 5))
		if refused != 1 || !reflect.DeepEqual(v, []int64{3, 10, 0}) {
			t.Fatalf("values %v, refused %d", v, refused)
		}
		// The refused admission did not count a request.
		if v, refused := admit(t, s, rpm("minute", 5)); refused != -1 || v[0] != 1 {
			t.Fatalf("after a refusal: values %v, refused %d", v, refused)
		}
		v, refused = admit(t, s, budget("month", 100), rpm("minute", 5))
		if refused != -1 || !reflect.DeepEqual(v, []int64{3, 2}) {
			t.Fatalf("admitted: values %v, refused %d", v, refused)
		}
	})
	t.Run("RepeatedKeysInOneCharge", func(t *testing.T) {
		s := open(t, "repeat")
		if err := s.Add(ctx, []entitlement.Counter{charge("r", 2), charge("r", 3)}); err != nil {
			t.Fatal(err)
		}
		if v, _ := admit(t, s, budget("r", 100)); v[0] != 5 {
			t.Fatalf("value %v", v)
		}
	})
	t.Run("ConcurrentAdmissionsNeverPassTheLimit", func(t *testing.T) {
		stores := []entitlement.Store{open(t, "race")}
		if shared {
			stores = append(stores, open(t, "race")) // a second replica
		}
		var admitted atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, 40)
		for i := range 40 {
			wg.Go(func() {
				_, refused, err := stores[i%len(stores)].Admit(ctx, []entitlement.Counter{budget("race-day", 1000), rpm("race", 7)})
				if err != nil {
					errs <- err
					return
				}
				if refused < 0 {
					admitted.Add(1)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if n := admitted.Load(); n != 7 {
			t.Fatalf("%d admitted, want 7", n)
		}
	})
	if shared {
		t.Run("ReplicasShareCounters", func(t *testing.T) {
			a, b := open(t, "shared"), open(t, "shared")
			if err := a.Add(ctx, []entitlement.Counter{charge("s", 42)}); err != nil {
				t.Fatal(err)
			}
			if v, _ := admit(t, b, budget("s", 100)); v[0] != 42 {
				t.Fatalf("the other replica sees %v", v)
			}
		})
	}
}

func TestMemoryStore(t *testing.T) {
	storeSuite(t, false, func(*testing.T, string) entitlement.Store { return entitlement.NewMemory() })
}

func TestRedisStore(t *testing.T) {
	addr := redistest.Start(t)
	storeSuite(t, true, func(t *testing.T, ns string) entitlement.Store {
		s, err := entitlement.OpenRedis(context.Background(), entitlement.RedisConfig{Addr: addr, Prefix: ns + ":"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestPostgresStore(t *testing.T) {
	srv := pgtest.Start(t)
	dbs := map[string]string{}
	var mu sync.Mutex
	storeSuite(t, true, func(t *testing.T, ns string) entitlement.Store {
		mu.Lock()
		dsn, ok := dbs[ns]
		if !ok {
			var err error
			if dsn, err = pgtest.CreateDatabase(context.Background(), srv, fmt.Sprintf("limits_%s", ns)); err != nil {
				mu.Unlock()
				t.Fatal(err)
			}
			dbs[ns] = dsn
		}
		mu.Unlock()
		s, err := entitlement.OpenPostgres(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
