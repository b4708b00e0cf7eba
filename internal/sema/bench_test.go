package sema

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkAcquireRelease acquires and releases one slot of a random limit
// among n limits that each already have a live lease. The cost per operation
// should not grow with n.
func BenchmarkAcquireRelease(b *testing.B) {
	for _, n := range []int{10, 1_000, 100_000} {
		b.Run(fmt.Sprintf("limits=%d", n), func(b *testing.B) {
			m := New(DefaultConfig())
			names := make([]string, n)
			for i := range n {
				names[i] = fmt.Sprintf("resource:%d", i)
				if _, err := m.CreateLimit(t0, limitID(uint64(i)), LimitSpec{Name: names[i], Limit: 2, Active: true}); err != nil {
					b.Fatal(err)
				}
				r := Request{Names: names[i : i+1], Slots: 1, LeaseID: testID('h', uint64(i)), LeaseDuration: time.Minute}
				if o, err := m.Acquire(t0, r); err != nil || !o.Granted {
					b.Fatalf("setup acquire: %v %v", o, err)
				}
			}
			m.Drain()
			rng := rand.New(rand.NewPCG(1, 2))
			picks := make([]int, 4096)
			for i := range picks {
				picks[i] = rng.IntN(n)
			}
			now := at(time.Second)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				id := leaseID(uint64(i))
				o, err := m.Acquire(now, Request{Names: names[picks[i%len(picks)] : picks[i%len(picks)]+1], Slots: 1, LeaseID: id, LeaseDuration: time.Minute})
				if err != nil || !o.Granted {
					b.Fatalf("acquire: %v %v", o, err)
				}
				if !m.Release(now, id) {
					b.Fatal("release: not held")
				}
				m.Drain()
			}
		})
	}
}
