package vm

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// initScript is /init: it mounts the kernel file systems, brings up lo,
// loads the modules, runs /script and prints the end marker with the
// script's status. %[1]s is the insmod commands, %[2]s the marker.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing || echo "skbstat-vm: no tracefs"
mount -t debugfs debugfs /sys/kernel/debug || echo "skbstat-vm: no debugfs"
mount -t bpf bpf /sys/fs/bpf || echo "skbstat-vm: no bpf file system"
ip link set lo up
%[1]s# A fresh line: the firmware may have left escape sequences on this one.
echo
echo "skbstat-vm: start"
sh /script </dev/null
echo "%[2]s status $?"
poweroff -f
`

// buildInitramfs writes a newc cpio archive to file with busybox, /init,
// the script, the modules (decompressed, since busybox insmod may not
// handle compression), the unpacked packages and opt's files.
func buildInitramfs(file string, img image, opt Options, token string) error {
	mods, err := resolveModules(img.modules, opt.Modules)
	if err != nil {
		return err
	}
	var insmod strings.Builder
	for _, m := range mods {
		fmt.Fprintf(&insmod, "insmod /lib/modules/%[1]s.ko || echo \"%[2]s %[1]s\"\n", m.name, insmodFailedMarker)
	}

	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	w := newCPIOWriter(f)
	for _, d := range []string{"/bin", "/sbin", "/usr/bin", "/usr/sbin", "/dev", "/proc", "/sys", "/tmp", "/run", "/root", "/etc", "/lib/modules"} {
		w.dir(d)
	}
	// The kernel opens /dev/console for /init before devtmpfs is mounted.
	w.charDevice("/dev/console", 5, 1)
	if err := w.hostFile("/bin/busybox", img.busybox, 0o755); err != nil {
		return err
	}
	for _, tree := range img.packages {
		if err := w.addTree(tree); err != nil {
			return fmt.Errorf("package %s: %w", filepath.Base(tree), err)
		}
	}
	w.file("/init", 0o755, []byte(fmt.Sprintf(initScript, insmod.String(), endMarker+" "+token)))
	w.file("/script", 0o755, []byte(opt.Script))
	for _, m := range mods {
		w.file("/lib/modules/"+m.name+".ko", 0o644, m.data)
	}
	guestPaths := make([]string, 0, len(opt.Files))
	for g := range opt.Files {
		guestPaths = append(guestPaths, g)
	}
	sort.Strings(guestPaths)
	for _, g := range guestPaths {
		if !path.IsAbs(g) {
			return fmt.Errorf("guest path %q is not absolute", g)
		}
		fi, err := os.Stat(opt.Files[g])
		if err != nil {
			return err
		}
		if err := w.hostFile(g, opt.Files[g], fi.Mode().Perm()); err != nil {
			return err
		}
	}
	if err := w.close(); err != nil {
		return err
	}
	return f.Close()
}

// insmodFailedMarker starts the line /init prints for a module that did
// not load: Run makes that an error rather than leave the script to fail
// for want of the module.
const insmodFailedMarker = "skbstat-vm: insmod failed:"

var insmodFailed = regexp.MustCompile(`(?m)^` + insmodFailedMarker + ` (\S+)$`)

// failedModules returns the modules that the console says did not load.
func failedModules(console string) []string {
	var names []string
	for _, m := range insmodFailed.FindAllStringSubmatch(console, -1) {
		names = append(names, m[1])
	}
	return names
}

// module is a loadable module, decompressed.
type module struct {
	name string // as the kernel names it, with "_" for "-"
	data []byte
}

// resolveModules returns the modules to load for names, dependencies
// first, each once. Debian's packages leave modules.dep to depmod at
// install time, so the dependencies come from each module's .modinfo
// "depends=", which depmod reads too. Built-in modules need no loading;
// a name that is neither is an error.
func resolveModules(dir string, names []string) ([]module, error) {
	if len(names) == 0 {
		return nil, nil
	}
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			files[moduleName(d.Name())] = p
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	builtin, _ := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	builtins := map[string]bool{}
	for _, line := range strings.Fields(string(builtin)) {
		builtins[moduleName(line)] = true
	}

	var order []module
	seen := map[string]bool{}
	var visit func(name, neededBy string) error
	visit = func(name, neededBy string) error {
		if seen[name] {
			return nil
		}
		seen[name] = true
		file, ok := files[name]
		switch {
		case !ok && builtins[name]:
			return nil
		case !ok && neededBy != "":
			return fmt.Errorf("module %q, needed by %s, is neither in %s nor built in", name, neededBy, dir)
		case !ok:
			return fmt.Errorf("module %q is neither in %s nor built in", name, dir)
		}
		data, err := readModule(file)
		if err != nil {
			return fmt.Errorf("module %s: %w", name, err)
		}
		deps, err := moduleDepends(data)
		if err != nil {
			return fmt.Errorf("module %s: %w", file, err)
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		order = append(order, module{name: name, data: data})
		return nil
	}
	for _, n := range names {
		if err := visit(moduleName(n), ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleDepends returns the "depends=" list of a module's .modinfo.
func moduleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	info, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, field := range strings.Split(string(info), "\x00") {
		if deps, ok := strings.CutPrefix(field, "depends="); ok {
			var names []string
			for _, d := range strings.Split(deps, ",") {
				if d != "" {
					names = append(names, moduleName(d))
				}
			}
			return names, nil
		}
	}
	return nil, nil
}

// moduleName turns "kernel/drivers/net/veth.ko.xz" or "nf-conntrack"
// into the module's name, "veth" or "nf_conntrack".
func moduleName(s string) string {
	base := path.Base(s)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// readModule returns the module file's content, decompressed.
func readModule(file string) ([]byte, error) {
	switch filepath.Ext(file) {
	case ".ko":
		return os.ReadFile(file)
	case ".gz":
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r, err := gzip.NewReader(f)
		if err != nil {
			return nil, err
		}
		return io.ReadAll(r)
	case ".xz":
		return decompress(file, "xz", "xz-utils")
	case ".zst":
		return decompress(file, "zstd", "zstd")
	}
	return nil, fmt.Errorf("%s: unknown module compression", file)
}

func decompress(file, tool, pkg string) ([]byte, error) {
	ctx := context.Background()
	bin, err := hostTool(ctx, tool, pkg)
	if err != nil {
		return nil, err
	}
	out, err := output(ctx, "", bin, "-dc", file)
	return []byte(out), err
}

// cpioWriter writes a newc ("070701") archive, the format the kernel
// unpacks as initramfs. Parent directories are added as needed.
type cpioWriter struct {
	w    *bufio.Writer
	ino  int
	dirs map[string]bool
	err  error
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriter(w), dirs: map[string]bool{"/": true}}
}

func (c *cpioWriter) header(name string, mode uint32, size int64, rdevMajor, rdevMinor int) {
	if c.err != nil {
		return
	}
	c.ino++
	name = strings.TrimPrefix(name, "/")
	_, c.err = fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\x00",
		c.ino, mode, 0, 0, 1, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0, name)
	c.pad(int64(110 + len(name) + 1))
}

func (c *cpioWriter) pad(n int64) {
	if c.err == nil && n%4 != 0 {
		_, c.err = c.w.Write(make([]byte, 4-n%4))
	}
}

func (c *cpioWriter) parents(name string) {
	if d := path.Dir(name); !c.dirs[d] {
		c.dir(d)
	}
}

func (c *cpioWriter) dir(name string) {
	if c.dirs[name] {
		return
	}
	c.parents(name)
	c.dirs[name] = true
	c.header(name, 0o040755, 0, 0, 0)
}

func (c *cpioWriter) charDevice(name string, major, minor int) {
	c.parents(name)
	c.header(name, 0o020600, 0, major, minor)
}

func (c *cpioWriter) symlink(name, target string) {
	c.parents(name)
	c.header(name, 0o120777, int64(len(target)), 0, 0)
	if c.err == nil {
		_, c.err = c.w.WriteString(target)
	}
	c.pad(int64(len(target)))
}

func (c *cpioWriter) file(name string, perm fs.FileMode, data []byte) {
	c.parents(name)
	c.header(name, 0o100000|uint32(perm), int64(len(data)), 0, 0)
	if c.err == nil {
		_, c.err = c.w.Write(data)
	}
	c.pad(int64(len(data)))
}

// hostFile streams a host file into the archive.
func (c *cpioWriter) hostFile(name, hostPath string, perm fs.FileMode) error {
	f, err := os.Open(hostPath)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", hostPath)
	}
	c.parents(name)
	c.header(name, 0o100000|uint32(perm), fi.Size(), 0, 0)
	if c.err == nil {
		var n int64
		n, c.err = io.Copy(c.w, f)
		if c.err == nil && n != fi.Size() {
			c.err = fmt.Errorf("%s changed size while being copied", hostPath)
		}
	}
	c.pad(fi.Size())
	return c.err
}

// close writes the trailer.
func (c *cpioWriter) close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	if c.err != nil {
		return c.err
	}
	return c.w.Flush()
}
