package httpapi

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/google/uuid"
	"pgregory.net/rapid"
)

// The hand-written answers are byte for byte what encoding/json writes for
// the same values, whatever names, numbers and times they hold.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var refs minimalList
		if !rapid.Bool().Draw(t, "nil limits") {
			refs = make(minimalList, rapid.IntRange(0, 3).Draw(t, "limits"))
		}
		for i := range refs {
			var id uuid.UUID
			copy(id[:], rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "id"))
			refs[i] = minimalJSON{ID: id, Name: rapid.String().Draw(t, "name"), Limit: rapid.Int().Draw(t, "limit")}
		}
		var lease uuid.UUID
		copy(lease[:], rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "lease"))
		waited := rapid.OneOf(
			rapid.Float64(),
			rapid.Float64Range(0, 1e-5),
			rapid.SampledFrom([]float64{0, math.Copysign(0, -1), 1e-6, 1e21, 1e20, 123456.789, 5e-324, math.MaxFloat64}),
		).Draw(t, "waited")
		g := grantJSON{
			LeaseID:       lease,
			Limits:        refs,
			FencingToken:  rapid.Uint64().Draw(t, "fence"),
			Expires:       stamp(time.Unix(0, rapid.Int64Range(-1e18, 1e18).Draw(t, "expires")).In(time.FixedZone("x", rapid.IntRange(-50000, 50000).Draw(t, "zone")))),
			WaitedSeconds: waited,
		}
		want, err := json.Marshal(g)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.appendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("appendJSON wrote\n%s\nencoding/json writes\n%s", got, want)
		}
		want, _ = json.Marshal(refs)
		if got := refs.appendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("appendJSON wrote\n%s\nencoding/json writes\n%s", got, want)
		}
	})
}
