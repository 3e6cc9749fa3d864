package main

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// vethCommand joins this network namespace to the one of process PID with
// a veth pair, for the test VMs, whose busybox ip cannot move a device
// between namespaces:
//
//	traffic veth -pid PID LOCAL_PREFIX PEER_PREFIX
//
// The local end is "skbstat0", the peer "skbstat1"; both come up, and so
// does the peer namespace's loopback.
func vethCommand(args []string, stdout io.Writer) error {
	fs := newFlagSet("veth")
	pid := fs.Int("pid", 0, "a process in the peer network namespace")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *pid <= 0 || fs.NArg() != 2 {
		return fmt.Errorf("%w: veth: want -pid PID LOCAL_PREFIX PEER_PREFIX", errUsage)
	}
	var prefixes [2]netip.Prefix
	for i := range prefixes {
		p, err := netip.ParsePrefix(fs.Arg(i))
		if err != nil {
			return fmt.Errorf("%w: veth: %s: %v", errUsage, fs.Arg(i), err)
		}
		prefixes[i] = p
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "skbstat0"}, PeerName: "skbstat1"}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth: add: %w", err)
	}
	peer, err := netlink.LinkByName("skbstat1")
	if err != nil {
		return fmt.Errorf("veth: %w", err)
	}
	if err := netlink.LinkSetNsPid(peer, *pid); err != nil {
		return fmt.Errorf("veth: move skbstat1 to the namespace of %d: %w", *pid, err)
	}
	ns, err := netns.GetFromPid(*pid)
	if err != nil {
		return fmt.Errorf("veth: namespace of %d: %w", *pid, err)
	}
	defer ns.Close()
	here, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("veth: netlink: %w", err)
	}
	defer here.Close()
	there, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("veth: netlink in the namespace of %d: %w", *pid, err)
	}
	defer there.Close()
	for _, c := range []struct {
		h    *netlink.Handle
		name string
		p    netip.Prefix
	}{{here, "skbstat0", prefixes[0]}, {there, "skbstat1", prefixes[1]}, {there, "lo", netip.Prefix{}}} {
		if err := configure(c.h, c.name, c.p); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "veth: skbstat0 %s, skbstat1 %s in the namespace of %d\n", prefixes[0], prefixes[1], *pid)
	return nil
}

// configure gives device name the address p (if valid) and brings it up.
func configure(h *netlink.Handle, name string, p netip.Prefix) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("veth: %s: %w", name, err)
	}
	if p.IsValid() {
		addr, err := netlink.ParseAddr(p.String())
		if err != nil {
			return fmt.Errorf("veth: %s: %w", p, err)
		}
		if err := h.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("veth: address %s on %s: %w", p, name, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("veth: %s up: %w", name, err)
	}
	return nil
}
