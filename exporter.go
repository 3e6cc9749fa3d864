package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"

	"github.com/skbstat/skbstat/metrics"
	"github.com/skbstat/skbstat/progs"
)

// newMetrics returns the counters of an exporter, with the attached probes
// counted.
func newMetrics(o options, set *progs.Set) *metrics.Counters {
	m := metrics.New(o.maxSeries, metrics.Info{Version: version(), GoArch: runtime.GOARCH, Filter: o.cfg.Filter.String()})
	for _, a := range set.Attached {
		m.Attached(a.Section.String(), a.Mechanism)
	}
	return m
}

// version is the module version skbstat was built as, with its commit
// where the build recorded one.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	return v
}

// listen opens --listen's address, so that one that cannot be listened on
// is a usage error before anything is loaded.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usageError{fmt.Sprintf("--listen %s: %v", addr, err)}
	}
	return ln, nil
}

// checkTextfile checks that --textfile's directory exists.
func checkTextfile(path string) error {
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return usageError{fmt.Sprintf("--textfile %s: no directory %s", path, dir)}
	}
	return nil
}

// writeTextfile writes the metrics to path atomically: to a file beside it
// that node_exporter's textfile collector ignores (it reads *.prom only),
// then renamed over it.
func writeTextfile(path string, m *metrics.Counters) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("--textfile: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a rename, there is nothing left to remove
	if err := m.Write(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("--textfile: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("--textfile: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("--textfile: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("--textfile: %w", err)
	}
	return nil
}
