package vm

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestResolveModules checks dependency order on real kernel packages:
// vxlan needs udp_tunnel and ip6_udp_tunnel loaded first. veth and dummy,
// which the tests load, are modules without dependencies in every kernel
// of the matrix (6.12 compresses them with xz).
func TestResolveModules(t *testing.T) {
	requireVMs(t)
	for _, k := range Matrix {
		t.Run(k.Name, func(t *testing.T) {
			img, err := prepare(context.Background(), k, nil)
			if err != nil {
				t.Fatal(err)
			}
			mods, err := resolveModules(img.modules, []string{"vxlan", "veth", "dummy", "udp-tunnel"})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, m := range mods {
				names = append(names, m.name)
				if !bytes.HasPrefix(m.data, []byte("\x7fELF")) {
					t.Errorf("module %s is not a decompressed ELF file", m.name)
				}
			}
			vxlan := slices.Index(names, "vxlan")
			for _, dep := range []string{"udp_tunnel", "ip6_udp_tunnel"} {
				if i := slices.Index(names, dep); i < 0 || i > vxlan {
					t.Errorf("load order %v: want %s before vxlan", names, dep)
				}
			}
			want := []string{"dummy", "ip6_udp_tunnel", "udp_tunnel", "veth", "vxlan"}
			if got := slices.Sorted(slices.Values(names)); !slices.Equal(got, want) {
				t.Errorf("load order %v, want each of %v once", names, want)
			}
			if _, err := resolveModules(img.modules, []string{"no_such_module"}); err == nil || !strings.Contains(err.Error(), `"no_such_module"`) {
				t.Errorf("unknown module: %v, want an error naming it", err)
			}
			var files []string
			for _, m := range []string{"veth", "dummy"} {
				f, _ := filepath.Glob(filepath.Join(img.modules, "kernel/drivers/net/"+m+".ko*"))
				files = append(files, f...)
			}
			t.Logf("%s: load order %v, files %v", k, names, relative(img.modules, files))
		})
	}
}

func relative(dir string, paths []string) []string {
	var rel []string
	for _, p := range paths {
		r, _ := filepath.Rel(dir, p)
		rel = append(rel, r)
	}
	return rel
}
