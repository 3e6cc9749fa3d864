package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/skbstat/skbstat/layout"
)

// namespace is the network namespace that -I and --netns mean: skbstat's
// own, or the one --netns names.
type namespace struct {
	spec string // --netns's value; "" for skbstat's own
	// inode is the namespace's inode number; 0 for skbstat's own on a
	// kernel without network namespaces.
	inode uint32
	// path opens the namespace; "" for skbstat's own, and for an inode:N
	// that no file found opens.
	path string
}

// Where inode:N looks for a file that opens namespace N.
var netnsGlobs = []string{"/proc/[0-9]*/ns/net", "/run/netns/*"}

// ownNetns is the namespace skbstat runs in.
const ownNetns = "/proc/self/ns/net"

// parseNetns resolves --netns's value spec: PATH, pid:N or inode:N; "" is
// skbstat's own namespace.
func parseNetns(spec string) (namespace, error) {
	kind, value, _ := strings.Cut(spec, ":")
	switch {
	case spec == "":
		return ownNamespace()
	case kind == "pid":
		pid, err := strconv.ParseUint(value, 10, 31)
		if err != nil || pid == 0 {
			return namespace{}, usageError{fmt.Sprintf("--netns %s: not a process id", spec)}
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			return namespace{}, usageError{fmt.Sprintf("--netns %s: no such process", spec)}
		}
		return openNamespace(spec, fmt.Sprintf("/proc/%d/ns/net", pid))
	case kind == "inode":
		inode, err := strconv.ParseUint(value, 10, 32)
		if err != nil || inode == 0 {
			return namespace{}, usageError{fmt.Sprintf("--netns %s: not an inode number", spec)}
		}
		return namespace{spec: spec, inode: uint32(inode), path: findNamespace(uint32(inode))}, nil
	}
	return openNamespace(spec, spec)
}

// ownNamespace is skbstat's namespace. A kernel without network
// namespaces has no file for it.
func ownNamespace() (namespace, error) {
	var st unix.Stat_t
	err := unix.Stat(ownNetns, &st)
	if errors.Is(err, unix.ENOENT) {
		return namespace{}, nil
	}
	if err != nil {
		return namespace{}, fmt.Errorf("skbstat's network namespace: %w", &os.PathError{Op: "stat", Path: ownNetns, Err: err})
	}
	return namespace{inode: uint32(st.Ino)}, nil
}

// openNamespace is the namespace that path opens, which must be a network
// namespace.
func openNamespace(spec, path string) (namespace, error) {
	inode, err := netnsInode(path)
	if err != nil {
		return namespace{}, usageError{fmt.Sprintf("--netns %s: %v", spec, err)}
	}
	return namespace{spec: spec, inode: inode, path: path}, nil
}

var errNotNetns = errors.New("not a network namespace")

// netnsInode is the inode number of the network namespace that path opens.
func netnsInode(path string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	kind, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil || kind != unix.CLONE_NEWNET {
		return 0, errNotNetns
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat: %w", err)
	}
	return uint32(st.Ino), nil
}

// findNamespace returns a file that opens the network namespace of inode
// number inode, or "" where netnsGlobs find none: a namespace cannot be
// opened by its number.
func findNamespace(inode uint32) string {
	for _, glob := range netnsGlobs {
		paths, _ := filepath.Glob(glob) // the patterns are valid
		for _, path := range paths {
			var st unix.Stat_t
			if unix.Stat(path, &st) != nil || st.Ino != uint64(inode) {
				continue
			}
			if found, err := netnsInode(path); err == nil && found == inode {
				return path
			}
		}
	}
	return ""
}

// String names the namespace in messages.
func (ns namespace) String() string {
	if ns.spec == "" {
		return "skbstat's network namespace"
	}
	return "netns " + ns.spec
}

// ifindex resolves network device name in ns; an unknown one is a usage
// error that lists the devices there are.
func ifindex(name string, ns namespace) (int, error) {
	h, err := ns.netlink()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if err == nil {
		return link.Attrs().Index, nil
	}
	var names []string
	if links, lerr := h.LinkList(); lerr == nil {
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
	}
	where := ""
	if ns.spec != "" {
		where = " in " + ns.String()
	}
	return 0, usageError{fmt.Sprintf("-I %s: no such network device%s (devices: %s)", name, where, strings.Join(names, ", "))}
}

// netlink opens a netlink handle in ns.
func (ns namespace) netlink() (*netlink.Handle, error) {
	if ns.spec == "" {
		return netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if ns.path == "" {
		return nil, usageError{fmt.Sprintf("--netns %s: no file under %s opens that namespace, so -I cannot name its devices", ns.spec, strings.Join(netnsGlobs, " or "))}
	}
	f, err := os.Open(ns.path)
	if err != nil {
		return nil, usageError{fmt.Sprintf("--netns %s: %v", ns.spec, err)}
	}
	defer f.Close()
	h, err := netlink.NewHandleAt(netns.NsHandle(f.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("%s: netlink: %w", ns, err)
	}
	return h, nil
}

// netnsFits makes the namespace conditions of o fit layout l, from BTF:
// a kernel without network namespaces (no net_device nd_net) has one, so
// there -I's index alone is exact and --netns is refused. A calibrated
// layout is checked once calibrated, by netnsCalibrated.
func (o *options) netnsFits(l *layout.Layout) error {
	f := &o.cfg.Filter
	switch {
	case l.IsSymbolic() || f.Ifindex == 0 && o.netns.spec == "":
	case l.NetDevice.Net.Size == 0 && o.netns.spec != "":
		return usageError{fmt.Sprintf("--netns %s: this kernel has no network namespaces (net_device has no nd_net)", o.netns.spec)}
	case l.NetDevice.Net.Size == 0:
		f.Netns = 0
	case f.Netns == 0:
		return fmt.Errorf("-I %s: skbstat's network namespace: %s not found", f.Ifname, ownNetns)
	}
	return nil
}

// netnsCalibrated fails where the namespace conditions of o need fields
// that calibration could not find (it says why in a line of its own).
func (o *options) netnsCalibrated(l *layout.Layout) error {
	if o.cfg.Filter.Netns == 0 || l.NetDevice.Net.Size != 0 && l.Net.Inum.Size != 0 {
		return nil
	}
	what := "--netns " + o.netns.spec
	if o.netns.spec == "" {
		what = "-I " + o.cfg.Filter.Ifname
	}
	return fmt.Errorf("%s: the network namespace of devices could not be calibrated (see above): pass --btf FILE with this kernel's BTF", what)
}
