// Package lab is a private network namespace in which skbstat sends packets
// it knows to the last byte: the kernel's handling of them tells skbstat the
// kernel's layout (calibration) and proves the programs built on that layout.
//
// The namespace has lo up and two dummy devices with unusual indices and
// names, each with an IPv4 and an IPv6 network whose addresses and the ports
// of the lab's sockets are chosen at random, so that two skbstat instances
// (or tests) running at once never see each other's packets. A packet sent to
// a dummy's peer address leaves through that device (dummy devices have no
// neighbours to resolve and free what they are given); one sent to the lab's
// own address goes over lo and is dropped at a closed port. Nothing outside
// the namespace is touched.
//
// Where no namespace can be made (no CAP_SYS_ADMIN, no CONFIG_NET_NS), Open
// falls back to the host's loopback and a closed port; then there are no
// devices, and Lab.Private is false.
package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Device is one of the lab's dummy devices.
type Device struct {
	Name  string
	Index int
	// Local is the lab's address on the device; Peer, an address reached
	// through it. Local6 and Peer6 are IPv6 (zero where IPv6 is off).
	Local, Peer   netip.Addr
	Local6, Peer6 netip.Addr
}

// Lab is the namespace, its devices and its sockets.
type Lab struct {
	// Private: the lab is a namespace of its own; else it is the host's
	// loopback, and Devices is empty.
	Private bool
	// NetnsInode is the namespace's inode number, as /proc/PID/ns/net shows.
	NetnsInode uint64
	Devices    []Device
	// IPv6: the namespace can send IPv6.
	IPv6 bool
	// Fallback says why the lab is not private; NoDevices, why it has no
	// devices.
	Fallback, NoDevices error
	// Magic starts every payload the lab sends: it tells the lab's
	// packets from everybody else's at global tracepoints.
	Magic [8]byte
	// Port is the source port of the sockets that send through the
	// devices, PeerPort their destination. LoPort is the source port of
	// packets over lo, ClosedPort their destination, where nothing
	// listens.
	Port, PeerPort, LoPort, ClosedPort uint16
	// Lo is the address packets over lo go from and to: the first
	// device's Local, or 127.0.0.1 on the host; Lo6 likewise.
	Lo, Lo6 netip.Addr

	ns    *os.File // keeps the namespace alive
	socks map[sockKey]int
	later []func()
}

var errNoNamespace = errors.New("cannot make a private network namespace")

// Open makes the lab.
func Open() (*Lab, error) {
	l := &Lab{socks: map[sockKey]int{}}
	// Random, so that labs of skbstat instances running at once differ;
	// math/rand's generator is seeded at random and keeps crypto/rand's
	// code out of the binary.
	var r [16]byte
	binary.NativeEndian.PutUint64(r[:], rand.Uint64())
	binary.NativeEndian.PutUint64(r[8:], rand.Uint64())
	copy(l.Magic[:], r[8:])
	port := func(i int, base uint16) uint16 { return base + binary.BigEndian.Uint16(r[2*i:])%10000 }
	l.Port, l.PeerPort, l.LoPort, l.ClosedPort = port(0, 20000), port(1, 30000), port(2, 40000), port(3, 50000)
	done := make(chan error)
	go func() { done <- l.build(r) }()
	if err := <-done; err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// build runs on a thread of its own that it never gives back: unshare
// changes the calling thread's namespace, and a thread that stays locked
// when its goroutine ends is discarded, so no other goroutine ever runs in
// the lab's namespace. The lab's sockets stay in it wherever they are used.
func (l *Lab) build(r [16]byte) error {
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return l.openHost(fmt.Errorf("%w: unshare: %v", errNoNamespace, err))
	}
	l.Private = true
	ns, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return err
	}
	l.ns = ns
	if l.NetnsInode, err = inode(ns); err != nil {
		return err
	}
	if err := l.configure(); err != nil {
		return fmt.Errorf("set up the calibration namespace: %w", err)
	}
	return l.openSockets()
}

// openHost is the fallback: the host's loopback and its namespace.
func (l *Lab) openHost(why error) error {
	l.Private = false
	ns, err := os.Open("/proc/self/ns/net")
	if err != nil {
		return err
	}
	l.ns = ns
	if l.NetnsInode, err = inode(ns); err != nil {
		return err
	}
	l.IPv6 = ipv6Works()
	l.Fallback, l.NoDevices = why, errors.New("calibrating on the host's loopback, which has no device of a known index")
	l.Lo, l.Lo6 = netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()
	if err := l.findClosedPort(); err != nil {
		return err
	}
	return l.openSockets()
}

// findClosedPort makes sure that nothing on the host listens on the lab's
// closed port, choosing other random ones until nothing does: the host's
// services must not be sent the lab's datagrams, and the proof counts
// their drops.
func (l *Lab) findClosedPort() error {
	for range 20 {
		if closed(netip.AddrPortFrom(l.Lo, l.ClosedPort)) && (!l.IPv6 || closed(netip.AddrPortFrom(l.Lo6, l.ClosedPort))) {
			return nil
		}
		l.ClosedPort = 50000 + uint16(rand.IntN(10000))
	}
	return errors.New("no closed UDP port found on the host's loopback")
}

// closed reports whether a UDP socket can be bound to a: nothing receives
// datagrams sent there.
func closed(a netip.AddrPort) bool {
	family := unix.AF_INET
	if a.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.Bind(fd, sockaddr(a)) == nil
}

func inode(f *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("network namespace inode: %w", err)
	}
	return st.Ino, nil
}

// ipv6Works reports whether this namespace has IPv6 (not disabled).
func ipv6Works() bool {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.Bind(fd, &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()}) == nil
}

// Later keeps cleanup, such as detaching the programs that watched the
// lab's packets, for Close, which runs them all at once. Detaching the last
// perf event program of a tracepoint waits for RCU grace periods, tens of
// milliseconds each, one detach after another (the kernel holds its trace
// event lock meanwhile); one that is not the last returns at once. So the
// caller closes the lab once its own programs are attached: then only the
// tracepoints they leave alone cost a wait.
func (l *Lab) Later(cleanup func()) {
	l.later = append(l.later, cleanup)
}

// Close runs the cleanups and waits for them, then closes the sockets and
// the namespace, which the kernel then removes with its devices.
func (l *Lab) Close() {
	var wg sync.WaitGroup
	for _, cleanup := range l.later {
		wg.Go(cleanup)
	}
	wg.Wait()
	l.later = nil
	for _, fd := range l.socks {
		unix.Close(fd)
	}
	l.socks = nil
	if l.ns != nil {
		l.ns.Close()
		l.ns = nil
	}
}
