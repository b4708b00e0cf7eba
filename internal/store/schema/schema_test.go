package schema_test

import (
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"

	"github.com/allot-dev/allot/internal/store/schema"
)

func TestRead(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		files   map[string]string
		want    []int
		wantErr string
	}{
		{"none", map[string]string{}, nil, ""},
		{"in order", map[string]string{"0002_b.sql": "b", "0001_a.sql": "a", "README.md": "not a migration"}, []int{1, 2}, ""},
		{"padding does not matter", map[string]string{"1_a.sql": "a", "0002_b.sql": "b", "10_j.sql": "", "3_c.sql": "", "4_d.sql": "", "5_e.sql": "", "6_f.sql": "", "7_g.sql": "", "8_h.sql": "", "9_i.sql": ""},
			[]int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, ""},
		{"gap", map[string]string{"0001_a.sql": "a", "0003_c.sql": "c"}, nil, "want 2"},
		{"repeat", map[string]string{"0001_a.sql": "a", "0001_b.sql": "b"}, nil, "want 2"},
		{"starts at 2", map[string]string{"0002_a.sql": "a"}, nil, "want 1"},
		{"zero", map[string]string{"0000_a.sql": "a"}, nil, "NNNN_description"},
		{"no number", map[string]string{"init.sql": "a"}, nil, "NNNN_description"},
		{"not a number", map[string]string{"x1_init.sql": "a"}, nil, "NNNN_description"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fsys := fstest.MapFS{"migrations": &fstest.MapFile{Mode: fs.ModeDir | 0o755}}
			for name, sql := range tt.files {
				fsys["migrations/"+name] = &fstest.MapFile{Data: []byte(sql)}
			}
			ms, err := schema.Read(fsys)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Read: got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			var got []int
			for _, m := range ms {
				got = append(got, m.Version)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("versions mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
