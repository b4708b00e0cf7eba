package e2e

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The linearizability test records what concurrent clients asked of the
// lease API and what they were told, with the time each call was sent and
// each answer came back, and asks porcupine whether one sequential order of
// those calls, each placed somewhere inside its own interval, explains every
// answer under a model of the limits. No request waits in line here, so the
// model needs no queue: a try-acquire is refused only when a named limit is
// full.

// linLimit is a limit of the linearizability test: its name and its size.
type linLimit struct {
	name  string
	limit int
}

// linKind is the kind of a recorded call.
type linKind int

const (
	linAcquire linKind = iota // increment-with-lease, one slot on each named limit, without waiting
	linRelease                // decrement-with-lease
	linRead                   // GET of one limit
)

// linInput is what a client asked.
type linInput struct {
	kind   linKind
	limits []int  // acquire: the limits named, in request order; read: the one limit read (indexes)
	lease  string // release: the lease released
}

// linOutput is what the server answered.
type linOutput struct {
	lease       string   // acquire: the lease granted, or "" if refused with 423
	holders     []string // read: the holders' lease ids, sorted
	activeSlots int      // read: active_slots
}

// linState is the model's state: for each limit, the ids of the leases
// holding it, sorted. States are values: Step makes a new one.
type linState [][]string

// linModel is the sequential specification of try-acquire, release and read
// on limits, for porcupine.
func linModel(limits []linLimit) porcupine.Model {
	return porcupine.Model{
		Init: func() any { return make(linState, len(limits)) },
		Step: func(state, input, output any) (bool, any) {
			return linStep(limits, state.(linState), input.(linInput), output.(linOutput))
		},
		Equal: func(a, b any) bool {
			return slices.EqualFunc(a.(linState), b.(linState), slices.Equal[[]string])
		},
		Hash: func(state any) uint64 {
			h := fnv.New64a()
			for _, held := range state.(linState) {
				for _, id := range held {
					h.Write([]byte(id))
					h.Write([]byte{','})
				}
				h.Write([]byte{';'})
			}
			return h.Sum64()
		},
		DescribeOperation: func(input, output any) string {
			return linDescribe(limits, input.(linInput), output.(linOutput))
		},
		DescribeState: func(state any) string {
			var b strings.Builder
			for i, held := range state.(linState) {
				short := make([]string, len(held))
				for j, id := range held {
					short[j] = shortID(id)
				}
				fmt.Fprintf(&b, "%s{%s} ", limits[i].name, strings.Join(short, ", "))
			}
			return strings.TrimSpace(b.String())
		},
	}
}

// linStep says whether the server could have answered out to in in state s,
// and the state after.
func linStep(limits []linLimit, s linState, in linInput, out linOutput) (bool, linState) {
	switch in.kind {
	case linAcquire:
		full := slices.ContainsFunc(in.limits, func(l int) bool { return len(s[l]) >= limits[l].limit })
		if out.lease == "" {
			return full, s
		}
		if full {
			return false, s
		}
		next := slices.Clone(s)
		for _, l := range in.limits {
			i, found := slices.BinarySearch(s[l], out.lease)
			if found {
				return false, s // a lease id handed out twice
			}
			next[l] = slices.Insert(slices.Clone(s[l]), i, out.lease)
		}
		return true, next
	case linRelease:
		next := slices.Clone(s)
		for l, held := range s {
			if i, found := slices.BinarySearch(held, in.lease); found {
				next[l] = slices.Delete(slices.Clone(held), i, i+1)
			}
		}
		return true, next
	case linRead:
		held := s[in.limits[0]]
		return out.activeSlots == len(held) && slices.Equal(out.holders, held), s
	}
	return false, s
}

// linDescribe renders one call for porcupine's visualization.
func linDescribe(limits []linLimit, in linInput, out linOutput) string {
	names := make([]string, len(in.limits))
	for i, l := range in.limits {
		names[i] = limits[l].name
	}
	switch in.kind {
	case linAcquire:
		if out.lease == "" {
			return fmt.Sprintf("acquire(%s) → 423", strings.Join(names, ", "))
		}
		return fmt.Sprintf("acquire(%s) → %s", strings.Join(names, ", "), shortID(out.lease))
	case linRelease:
		return fmt.Sprintf("release(%s)", shortID(in.lease))
	case linRead:
		short := make([]string, len(out.holders))
		for i, id := range out.holders {
			short[i] = shortID(id)
		}
		return fmt.Sprintf("read(%s) → %d {%s}", names[0], out.activeSlots, strings.Join(short, ", "))
	}
	return fmt.Sprintf("unknown call %d", in.kind)
}

// shortID is the random tail of a lease id (the head of a UUIDv7 is its
// time, shared by leases granted in the same millisecond).
func shortID(id string) string {
	if len(id) <= 8 {
		return id
	}
	return id[len(id)-8:]
}

// linRun is one run of the linearizability test: the server, the limits,
// and what bounds the clients' work.
type linRun struct {
	srv      *server
	client   *http.Client
	limits   []linLimit
	start    time.Time    // times in the history are nanoseconds since start
	deadline time.Time    // clients start no call after it
	budget   atomic.Int64 // calls left to all clients
}

// TestLeasesLinearizable checks that try-acquire, release and read of leases
// on a real server are linearizable: 8 clients call at random for about
// 1.5 s (at most 6,000 calls in all), and porcupine must find a sequential
// order of the calls, each inside its interval, that the model accepts.
func TestLeasesLinearizable(t *testing.T) {
	t.Parallel()
	run := &linRun{
		srv:    startServer(t, t.TempDir(), ""),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		limits: []linLimit{{"lin-a", 2}, {"lin-b", 1}},
	}
	t.Cleanup(run.client.CloseIdleConnections)
	for _, l := range run.limits {
		mustCall(t, run.client, "POST", run.srv.url("/v2/concurrency_limits/"), map[string]any{"name": l.name, "limit": l.limit}, nil, 201)
	}
	run.start = time.Now()
	run.deadline = run.start.Add(1500 * time.Millisecond)
	run.budget.Store(6000)

	const clients = 8
	histories := make([][]porcupine.Operation, clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			var err error
			histories[c], err = run.calls(t.Context(), c)
			if err != nil {
				t.Errorf("client %d: %v", c, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.Fatalf("not checking a history with calls of unknown outcome")
	}
	history := slices.Concat(histories...)

	var granted, refused, released, reads int
	var last int64
	for _, op := range history {
		last = max(last, op.Return)
		in, out := op.Input.(linInput), op.Output.(linOutput)
		switch {
		case in.kind == linAcquire && out.lease != "":
			granted++
		case in.kind == linAcquire:
			refused++
		case in.kind == linRelease:
			released++
		default:
			reads++
		}
	}
	if len(history) < 200 || granted == 0 || refused == 0 || released == 0 || reads == 0 {
		t.Fatalf("history too small to mean anything: %d calls (%d granted, %d refused, %d releases, %d reads), want ≥ 200 with some of each",
			len(history), granted, refused, released, reads)
	}

	model := linModel(run.limits)
	began := time.Now()
	res := porcupine.CheckOperationsTimeout(model, history, 20*time.Second)
	t.Logf("%d calls (%d granted, %d refused, %d releases, %d reads) in %v; checked in %v: %s",
		len(history), granted, refused, released, reads, time.Duration(last).Round(time.Millisecond), time.Since(began).Round(time.Millisecond), res)
	if res != porcupine.Ok {
		t.Errorf("linearizability check: got %s, want %s; %s", res, porcupine.Ok, linVisualize(model, history))
	}
}

// calls is one client: it makes random calls until the deadline or the
// budget is spent, and returns them with their call and return times.
// Times are read from the monotonic clock, which, unlike the wall clock,
// cannot step back between two readings and reorder the history.
func (r *linRun) calls(ctx context.Context, id int) ([]porcupine.Operation, error) {
	var ops []porcupine.Operation
	var held, released []string
	for time.Now().Before(r.deadline) && r.budget.Add(-1) >= 0 {
		in := r.pick(held, released)
		call := time.Since(r.start).Nanoseconds()
		out, err := r.do(ctx, in)
		ret := time.Since(r.start).Nanoseconds()
		if err != nil {
			return ops, err
		}
		ops = append(ops, porcupine.Operation{ClientId: id, Input: in, Call: call, Output: out, Return: ret})
		switch {
		case in.kind == linAcquire && out.lease != "":
			held = append(held, out.lease)
		case in.kind == linRelease:
			held = slices.DeleteFunc(held, func(l string) bool { return l == in.lease })
			if !slices.Contains(released, in.lease) {
				released = append(released, in.lease)
			}
		}
	}
	return ops, nil
}

// pick chooses the next call: two times in three a client holding leases
// releases one; otherwise it tries to acquire, reads, or now and then
// releases a lease it released already, which must change nothing.
func (r *linRun) pick(held, released []string) linInput {
	if len(held) > 0 && rand.IntN(3) > 0 {
		return linInput{kind: linRelease, lease: held[rand.IntN(len(held))]}
	}
	switch p := rand.IntN(20); {
	case p < 10:
		return linInput{kind: linAcquire, limits: rand.Perm(len(r.limits))[:1+rand.IntN(len(r.limits))]}
	case p < 11 && len(released) > 0:
		return linInput{kind: linRelease, lease: released[rand.IntN(len(released))]}
	}
	return linInput{kind: linRead, limits: []int{rand.IntN(len(r.limits))}}
}

// do makes one call and returns what the server answered, or an error for
// an answer outside the model.
func (r *linRun) do(ctx context.Context, in linInput) (linOutput, error) {
	names := make([]string, len(in.limits))
	for i, l := range in.limits {
		names[i] = r.limits[l].name
	}
	switch in.kind {
	case linAcquire:
		var a leaseAnswer
		code, _, err := call(ctx, r.client, "POST", r.srv.url("/v2/concurrency_limits/increment-with-lease"),
			map[string]any{"names": names, "slots": 1, "lease_duration": 60}, &a)
		switch {
		case err == nil && code == 200 && a.LeaseID != "":
			return linOutput{lease: a.LeaseID}, nil
		case err == nil && code == 423:
			return linOutput{}, nil
		}
		return linOutput{}, fmt.Errorf("acquire %v: got %d %q (%v), want 200 with a lease_id or 423", names, code, a.LeaseID, err)
	case linRelease:
		code, _, err := call(ctx, r.client, "POST", r.srv.url("/v2/concurrency_limits/decrement-with-lease"),
			map[string]any{"lease_id": in.lease}, nil)
		if err != nil || code != 204 {
			return linOutput{}, fmt.Errorf("release %s: got %d (%v), want 204", in.lease, code, err)
		}
		return linOutput{}, nil
	case linRead:
		var v limitView
		code, _, err := call(ctx, r.client, "GET", r.srv.url("/v2/concurrency_limits/"+names[0]), nil, &v)
		if err != nil || code != 200 {
			return linOutput{}, fmt.Errorf("read %s: got %d (%v), want 200", names[0], code, err)
		}
		ids := make([]string, len(v.Holders))
		for i, h := range v.Holders {
			ids[i] = h.LeaseID
		}
		slices.Sort(ids)
		return linOutput{holders: ids, activeSlots: v.ActiveSlots}, nil
	}
	return linOutput{}, fmt.Errorf("unknown call %d", in.kind)
}

// linVisualize checks history again, keeping what porcupine needs to draw
// it, writes the drawing to a file that outlives the test (t.TempDir is
// removed when the test ends) and says where it is.
func linVisualize(model porcupine.Model, history []porcupine.Operation) string {
	_, info := porcupine.CheckOperationsVerbose(model, history, 20*time.Second)
	f, err := os.CreateTemp("", "allot-linearizability-*.html")
	if err != nil {
		return fmt.Sprintf("no visualization: %v", err)
	}
	f.Close()
	if err := porcupine.VisualizePath(model, info, f.Name()); err != nil {
		return fmt.Sprintf("no visualization: %v", err)
	}
	return "visualization in " + f.Name()
}

// TestLinearizabilityModel checks the model on small hand-made histories, so
// that a checker which accepts everything cannot pass for a green test.
func TestLinearizabilityModel(t *testing.T) {
	t.Parallel()
	limits := []linLimit{{"lin-a", 2}, {"lin-b", 1}}
	const a, b = 0, 1
	acquire := func(client int, call, ret int64, lease string, names ...int) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Call: call, Return: ret,
			Input: linInput{kind: linAcquire, limits: names}, Output: linOutput{lease: lease}}
	}
	release := func(client int, call, ret int64, lease string) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Call: call, Return: ret,
			Input: linInput{kind: linRelease, lease: lease}, Output: linOutput{}}
	}
	read := func(client int, call, ret int64, limit, active int, holders ...string) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Call: call, Return: ret,
			Input: linInput{kind: linRead, limits: []int{limit}}, Output: linOutput{holders: holders, activeSlots: active}}
	}
	for _, tc := range []struct {
		name    string
		history []porcupine.Operation
		want    bool
	}{
		{"two overlapping grants of lin-b without a release", []porcupine.Operation{
			acquire(0, 0, 10, "L1", b),
			acquire(1, 5, 15, "L2", b),
		}, false},
		{"second grant of lin-b after the first returned", []porcupine.Operation{
			acquire(0, 0, 10, "L1", b),
			acquire(1, 20, 30, "L2", b),
		}, false},
		{"grants of lin-b with a release between", []porcupine.Operation{
			acquire(0, 0, 10, "L1", b),
			release(0, 11, 20, "L1"),
			acquire(1, 21, 30, "L2", b),
		}, true},
		{"second grant of lin-b overlapping the release", []porcupine.Operation{
			acquire(0, 0, 10, "L1", b),
			release(0, 11, 20, "L1"),
			acquire(1, 15, 25, "L2", b),
		}, true},
		{"two grants of lin-a", []porcupine.Operation{
			acquire(0, 0, 10, "L1", a),
			acquire(1, 5, 15, "L2", a),
		}, true},
		{"refused while lin-a has room", []porcupine.Operation{
			acquire(0, 0, 10, "L1", a),
			acquire(1, 11, 20, "", a),
		}, false},
		{"refused because one named limit is full", []porcupine.Operation{
			acquire(0, 0, 10, "L1", b),
			acquire(1, 11, 20, "", a, b),
		}, true},
		{"refused overlapping the release that freed the limit", []porcupine.Operation{
			acquire(0, 0, 10, "L1", b),
			release(0, 11, 20, "L1"),
			acquire(1, 15, 25, "", b),
		}, true},
		{"both limits granted while lin-b is full", []porcupine.Operation{
			acquire(0, 0, 10, "L1", b),
			acquire(1, 11, 20, "L2", a, b),
		}, false},
		{"read misses a holder", []porcupine.Operation{
			acquire(0, 0, 10, "L1", a),
			read(1, 11, 20, a, 1),
		}, false},
		{"read counts wrong", []porcupine.Operation{
			acquire(0, 0, 10, "L1", a),
			read(1, 11, 20, a, 2, "L1"),
		}, false},
		{"read after the release returned still sees the lease", []porcupine.Operation{
			acquire(0, 0, 10, "L1", a, b),
			release(0, 11, 20, "L1"),
			read(1, 21, 30, b, 1, "L1"),
		}, false},
		{"reads during the release see it before and after", []porcupine.Operation{
			acquire(0, 0, 10, "L1", a),
			release(0, 11, 20, "L1"),
			read(1, 12, 19, a, 1, "L1"),
			read(2, 13, 18, a, 0),
		}, true},
		{"reads during the release see it after, then before", []porcupine.Operation{
			acquire(0, 0, 10, "L1", a),
			release(0, 11, 30, "L1"),
			read(1, 12, 15, a, 0),
			read(2, 16, 20, a, 1, "L1"),
		}, false},
		{"release of an unknown lease changes nothing", []porcupine.Operation{
			acquire(0, 0, 10, "L1", b),
			release(1, 11, 20, "L9"),
			read(2, 21, 30, b, 1, "L1"),
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := porcupine.CheckOperations(linModel(limits), tc.history); got != tc.want {
				t.Errorf("linearizable: got %v, want %v", got, tc.want)
			}
		})
	}
}
