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
// vxlan needs udp_tunnel and ip6_udp_tunnel loaded first.
func TestResolveModules(t *testing.T) {
	requireVMs(t)
	for _, k := range Matrix {
		t.Run(k.Name, func(t *testing.T) {
			img, err := prepare(context.Background(), k)
			if err != nil {
				t.Fatal(err)
			}
			mods, err := resolveModules(img.modules, []string{"vxlan", "veth", "udp-tunnel"})
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
			if len(slices.Compact(slices.Sorted(slices.Values(names)))) != len(names) {
				t.Errorf("load order %v loads a module twice", names)
			}
			if _, err := resolveModules(img.modules, []string{"no_such_module"}); err == nil || !strings.Contains(err.Error(), `"no_such_module"`) {
				t.Errorf("unknown module: %v, want an error naming it", err)
			}
			compressed, _ := filepath.Glob(filepath.Join(img.modules, "kernel/drivers/net/veth.ko*"))
			t.Logf("%s: load order %v, veth file %v", k, names, relative(img.modules, compressed))
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
