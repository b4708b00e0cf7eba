package sqlite_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
	"github.com/allot-dev/allot/internal/store"
	"github.com/allot-dev/allot/internal/store/sqlite"
	"github.com/allot-dev/allot/internal/store/storetest"
)

// open opens a store in dir that is closed when the test ends.
func open(t *testing.T, dir string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), dir, sqlite.Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) store.Store { return open(t, t.TempDir()) },
		Reopen: func(t *testing.T, s store.Store) store.Store {
			ss := s.(*sqlite.Store)
			if err := ss.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return open(t, ss.Dir())
		},
	})
}

func TestOpenCreatesDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a", "b")
	open(t, dir)
	if _, err := os.Stat(filepath.Join(dir, sqlite.FileName)); err != nil {
		t.Errorf("database file: %v", err)
	}
}

func TestOpenDirectoryNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"with space", "per%cent", "per%25cent", "question?mark", "hash#mark", "ünïcode", "semi;colon&amp"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), name)
			s, err := sqlite.Open(t.Context(), dir, sqlite.Options{})
			if err != nil {
				t.Fatalf("Open(%q): %v", dir, err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, sqlite.FileName)); err != nil {
				t.Errorf("database file not where it belongs: %v", err)
			}
		})
	}
}

func TestOpenRefusesBadOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts sqlite.Options
	}{
		{"synchronous off", sqlite.Options{Synchronous: "OFF"}},
		{"synchronous unknown", sqlite.Options{Synchronous: "FULL; DROP TABLE leases"}},
		{"negative busy timeout", sqlite.Options{BusyTimeout: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "data")
			s, err := sqlite.Open(t.Context(), dir, tt.opts)
			if err == nil {
				_ = s.Close()
				t.Fatalf("Open with %+v: got nil error, want an error", tt.opts)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Open with bad options touched the data directory: stat: %v", err)
			}
		})
	}
}

// TestOneProcessAtATime checks that the database cannot be opened twice at
// once, and can be once the first store is closed.
func TestOneProcessAtATime(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := sqlite.Open(t.Context(), dir, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	second, err := sqlite.Open(t.Context(), dir, sqlite.Options{BusyTimeout: time.Millisecond})
	if !errors.Is(err, sqlite.ErrLocked) {
		if second != nil {
			_ = second.Close()
		}
		t.Fatalf("second Open while the first is open: got error %v, want ErrLocked", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	open(t, dir)
}

func TestTimeOutOfRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		time time.Time
	}{
		{"before 1678", time.Date(1677, time.January, 1, 0, 0, 0, 0, time.UTC)},
		{"after 2262", time.Date(2263, time.January, 1, 0, 0, 0, 0, time.UTC)},
		{"year 1", time.Date(1, time.January, 1, 0, 0, 0, 1, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := open(t, t.TempDir())
			l := sema.Lease{ID: uuid.New(), Created: tt.time, Fence: 1}
			if err := s.Commit(t.Context(), []sema.Change{{Kind: sema.PutLease, Lease: l}}); err == nil {
				t.Errorf("Commit of a lease created %v: got nil error, want an error", tt.time)
			}
		})
	}
}

// TestCrash kills a process that committed and checks that the commit
// survived it. The child is this test binary running crashHelper.
func TestCrash(t *testing.T) {
	t.Parallel()
	if os.Getenv("ALLOT_SQLITE_CRASH_DIR") != "" {
		crashHelper(t)
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), exe, "-test.run=^TestCrash$")
	cmd.Env = append(os.Environ(), "ALLOT_SQLITE_CRASH_DIR="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The first line the helper prints is "committed LEASE-ID FENCE".
	line, readErr := bufio.NewReader(stdout).ReadString('\n')
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait() // killed: the error says so
	f := strings.Fields(line)
	if readErr != nil || len(f) != 3 || f[0] != "committed" {
		t.Fatalf("helper process said %q (%v), want \"committed ID FENCE\"", line, readErr)
	}
	id, err := uuid.Parse(f[1])
	if err != nil {
		t.Fatal(err)
	}
	fence, err := strconv.ParseUint(f[2], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	want := store.State{Leases: []sema.Lease{crashLease(id, fence)}, Fence: fence}
	got, err := open(t, dir).Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Load after a crash mismatch (-want +got):\n%s", diff)
	}
}

func crashLease(id uuid.UUID, fence uint64) sema.Lease {
	created := time.Date(2026, time.January, 2, 3, 4, 5, 6, time.UTC)
	return sema.Lease{ID: id, Slots: 1, Holds: []sema.Hold{{LimitID: id, Slots: 1}}, Created: created,
		Duration: time.Minute, Expires: created.Add(time.Minute), Fence: fence}
}

// crashHelper commits one lease, says so on stdout and waits to be killed.
func crashHelper(t *testing.T) {
	s, err := sqlite.Open(t.Context(), os.Getenv("ALLOT_SQLITE_CRASH_DIR"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := crashLease(uuid.New(), 77)
	if err := s.Commit(t.Context(), []sema.Change{{Kind: sema.PutLease, Lease: l}}); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("committed %s %d\n", l.ID, l.Fence)
	// Wait for the kill; if the parent goes away first, stdin ends.
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	t.Fatal("helper process was not killed")
}

// BenchmarkCommit measures what a server's acquire and release cost the
// store: a batch of 32 new leases, then a batch deleting them, with that
// many leases already held.
func BenchmarkCommit(b *testing.B) {
	const batch = 32
	for _, sync := range []string{"FULL", "NORMAL"} {
		for _, held := range []int{0, 100_000} {
			b.Run(fmt.Sprintf("synchronous=%s/held=%d", sync, held), func(b *testing.B) {
				s, err := sqlite.Open(b.Context(), b.TempDir(), sqlite.Options{Synchronous: sync})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				limit := uuid.New()
				now := time.Now()
				lease := func(fence uint64) sema.Lease {
					return sema.Lease{ID: uuid.Must(uuid.NewV7()), Holds: []sema.Hold{{LimitID: limit, Slots: 1}}, Slots: 1,
						Holder:  sema.Holder{Type: "task_run", ID: "3f1a0c1e-6b7d-4e8f-9a0b-1c2d3e4f5a6b"},
						Created: now, Duration: 30 * time.Second, Expires: now.Add(30 * time.Second), Fence: fence}
				}
				var fence uint64
				for i := 0; i < held; i += 1000 {
					var cs []sema.Change
					for range min(1000, held-i) {
						fence++
						cs = append(cs, sema.Change{Kind: sema.PutLease, Lease: lease(fence)})
					}
					if err := s.Commit(b.Context(), cs); err != nil {
						b.Fatal(err)
					}
				}
				puts := make([]sema.Change, batch)
				dels := make([]sema.Change, batch)
				n := 0
				for b.Loop() {
					for i := range puts {
						fence++
						puts[i] = sema.Change{Kind: sema.PutLease, Lease: lease(fence)}
						dels[i] = sema.Change{Kind: sema.DeleteLease, ID: puts[i].Lease.ID}
					}
					if err := s.Commit(b.Context(), puts); err != nil {
						b.Fatal(err)
					}
					if err := s.Commit(b.Context(), dels); err != nil {
						b.Fatal(err)
					}
					n++
				}
				secs := b.Elapsed().Seconds()
				b.ReportMetric(float64(2*batch*n)/secs, "changes/s")
				b.ReportMetric(float64(2*n)/secs, "commits/s")
			})
		}
	}
}

// BenchmarkCommitAcquireRelease measures the batches a busy server commits:
// each is four new leases (one hold on a limit each) and the deletion of the
// four the previous batch put, as when many workers acquire and release.
func BenchmarkCommitAcquireRelease(b *testing.B) {
	const half = 4
	for _, sync := range []string{"FULL", "NORMAL"} {
		b.Run("synchronous="+sync, func(b *testing.B) {
			s, err := sqlite.Open(b.Context(), b.TempDir(), sqlite.Options{Synchronous: sync})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			limits := make([]uuid.UUID, half)
			for i := range limits {
				limits[i] = uuid.New()
			}
			now := time.Now()
			var fence uint64
			batch := make([]sema.Change, 2*half)
			put := func() {
				for i := range half {
					fence++
					batch[i] = sema.Change{Kind: sema.PutLease, Lease: sema.Lease{
						ID: uuid.Must(uuid.NewV7()), Holds: []sema.Hold{{LimitID: limits[i], Slots: 1}}, Slots: 1,
						Holder:  sema.Holder{Type: "task_run", ID: "3f1a0c1e-6b7d-4e8f-9a0b-1c2d3e4f5a6b"},
						Created: now, Duration: 30 * time.Second, Expires: now.Add(30 * time.Second), Fence: fence,
					}}
				}
			}
			// The first batch only puts, so that every later one has leases
			// to delete.
			put()
			if err := s.Commit(b.Context(), batch[:half]); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				for i := range half {
					batch[half+i] = sema.Change{Kind: sema.DeleteLease, ID: batch[i].Lease.ID}
				}
				put()
				if err := s.Commit(b.Context(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
		})
	}
}
