package progs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/skbstat/skbstat/kallsyms"
	"github.com/skbstat/skbstat/layout"
)

// Mechanism is how kernel-function rows are attached.
type Mechanism string

// The mechanisms, best first. Auto tries them in this order, per function.
const (
	Auto        Mechanism = "auto"
	Fentry      Mechanism = "fentry"       // BPF trampoline
	KprobeMulti Mechanism = "kprobe-multi" // one kprobe.multi link for many functions
	Kprobe      Mechanism = "kprobe"       // one kprobe per function
)

// ParseMechanism checks an --attach value.
func ParseMechanism(s string) (Mechanism, error) {
	switch m := Mechanism(s); m {
	case Auto, Fentry, KprobeMulti, Kprobe:
		return m, nil
	}
	return "", fmt.Errorf("unknown attach mechanism (auto, fentry, kprobe-multi or kprobe)")
}

// family is the IP version a kernel function handles.
type family uint8

const (
	anyFamily family = iota
	ipv4
	ipv6
)

// IP protocol numbers of the transport functions.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// kernelFunc is a function row of the original skbstat, or one named with
// -f. tableArg is the position of its struct sk_buff * (or, for socket-level
// rows, struct sock *) argument on the kernels of 2021, or the one -f gave
// (-1 if none): the fallback where BTF cannot say.
type kernelFunc struct {
	name     string
	section  Section
	rank     int
	family   family
	proto    uint8 // the transport it handles; 0 for IP-level functions
	tableArg int
	sock     bool // socket level: no skb, filtered on the socket
}

// FixedFuncs names the kernel functions of the fixed rows, whose prototypes
// a trimmed BTF file keeps.
func FixedFuncs() []string {
	names := make([]string, len(kernelFuncs))
	for i, k := range kernelFuncs {
		names[i] = k.name
	}
	return names
}

var kernelFuncs = []kernelFunc{
	{"tcp_recvmsg", Ingress, 0, anyFamily, protoTCP, 0, true},
	{"udp_recvmsg", Ingress, 0, ipv4, protoUDP, 0, true},
	{"tcp_drop", Ingress, 1, anyFamily, protoTCP, 1, false},
	{"tcp_v4_rcv", Ingress, 2, ipv4, protoTCP, 0, false},
	{"udp_rcv", Ingress, 2, ipv4, protoUDP, 0, false},
	{"icmp_rcv", Ingress, 2, ipv4, protoICMP, 0, false},
	{"tcp_v6_rcv", Ingress, 2, ipv6, protoTCP, 0, false},
	{"udpv6_rcv", Ingress, 2, ipv6, protoUDP, 0, false},
	{"icmpv6_rcv", Ingress, 2, ipv6, protoICMPv6, 0, false},
	{"ip_local_deliver_finish", Ingress, 15, ipv4, 0, 2, false},
	{"ip6_input_finish", Ingress, 15, ipv6, 0, 2, false},
	{"ip_local_deliver", Ingress, 16, ipv4, 0, 0, false},
	{"ip6_input", Ingress, 16, ipv6, 0, 0, false},
	{"ip_route_input_noref", Ingress, 17, ipv4, 0, 0, false},
	{"ip6_route_input", Ingress, 17, ipv6, 0, 0, false},
	{"ip_rcv_finish", Ingress, 18, ipv4, 0, 2, false},
	{"ip6_rcv_finish", Ingress, 18, ipv6, 0, 2, false},
	{"ip_rcv", Ingress, 19, ipv4, 0, 0, false},
	{"ip_error", Ingress, 19, ipv4, 0, 0, false},
	{"ipv6_rcv", Ingress, 19, ipv6, 0, 0, false},
	{"ip6_pkt_drop", Ingress, 19, ipv6, 0, 0, false},
	{"tcp_sendmsg", Egress, 0, anyFamily, protoTCP, 0, true},
	{"udp_sendmsg", Egress, 0, ipv4, protoUDP, 0, true},
	{"ip_local_out", Egress, 10, ipv4, 0, 2, false},
	{"__ip6_local_out", Egress, 10, ipv6, 0, 2, false},
	{"ip_output", Egress, 11, ipv4, 0, 2, false},
	{"ip6_output", Egress, 11, ipv6, 0, 2, false},
	{"ip_finish_output", Egress, 12, ipv4, 0, 2, false},
	{"ip6_finish_output", Egress, 12, ipv6, 0, 2, false},
	{"ip_finish_output2", Egress, 13, ipv4, 0, 2, false},
	{"ip6_finish_output2", Egress, 13, ipv6, 0, 2, false},
}

// funcTarget is where a function probe attaches.
type funcTarget struct {
	fn       string // the function, as rows name it
	symbol   string // what to attach to: fn, or its only compiler clone
	arg      int    // position of the skb (or sock) argument
	sock     bool
	proto    uint8 // for socket-level rows: the transport
	hasBTF   bool  // BTF describes fn, so fentry can attach to it
	received bool  // socket-level: the socket receives
	// layout says where a kprobe finds the argument in struct pt_regs.
	layout *layout.Layout
}

// fentry is the hook that attaches to t with a BPF trampoline, where BTF
// describes the function.
func (t *funcTarget) fentry() (hook, error) {
	if !t.hasBTF {
		return nil, errors.New("no BTF for " + t.symbol)
	}
	target, err := t.layout.FuncTarget(t.symbol)
	if err != nil {
		return nil, err
	}
	return fentryHook{fn: t.symbol, arg: t.arg, btfID: target}, nil
}

// kprobe is the hook that attaches to t with a kprobe on kernel
// architecture arch.
func (t *funcTarget) kprobe(arch string) (hook, error) {
	arg, err := t.kprobeArg(arch)
	return kprobeHook{symbol: t.symbol, arg: arg}, err
}

// kprobeArg is where a kprobe on kernel architecture arch finds t's
// argument in struct pt_regs.
func (t *funcTarget) kprobeArg(arch string) (layout.Field, error) {
	return t.layout.KprobeArg(arch, t.arg)
}

// wanted reports whether the filter lets any packet through k, as the
// original chose: an IPv4-only filter skips the IPv6 functions, -p udp the
// TCP and ICMP ones, and so on.
func (k kernelFunc) wanted(cfg Config) bool {
	v4, v6 := cfg.Filter.Families()
	if k.family == ipv4 && !v4 || k.family == ipv6 && !v6 {
		return false
	}
	return k.proto == 0 || cfg.Filter.AllowsProtocol(k.proto)
}

// wantedFuncs lists the function rows cfg asks for; socket-level rows that
// -I rules out, and -f values that do not parse (which CheckFunc refuses
// first), are returned in excluded.
func wantedFuncs(cfg Config) (fns []kernelFunc, excluded []Attachment) {
	for _, k := range kernelFuncs {
		if (k.section == Ingress && cfg.Ingress || k.section == Egress && cfg.Egress) && k.wanted(cfg) {
			if k.sock && cfg.Filter.Ifindex != 0 {
				excluded = append(excluded, Attachment{Section: k.section, Probe: k.name, Err: errSockDevice})
				continue
			}
			fns = append(fns, k)
		}
	}
	for i, value := range cfg.Funcs {
		fn, err := parseFunc(value)
		if err != nil {
			excluded = append(excluded, Attachment{Section: Func, Probe: value, Err: err})
			continue
		}
		fns = append(fns, kernelFunc{name: fn.name, section: Func, rank: i, tableArg: fn.arg})
	}
	return fns, excluded
}

// functionProbes resolves the functions fns to probes. Functions this
// kernel lacks are returned in missing.
func functionProbes(l *layout.Layout, syms *kallsyms.Table, fns []kernelFunc) (ps []*probe, missing []Attachment) {
	for _, k := range fns {
		t, err := resolveFunc(l, syms, k)
		if err != nil {
			missing = append(missing, Attachment{Section: k.section, Probe: k.name, Err: err})
			continue
		}
		ps = append(ps, &probe{section: k.section, name: k.name, rank: k.rank, fn: &t,
			prog: fmt.Sprintf("skbstat_fn%d", len(ps))})
	}
	return ps, missing
}

// lackingMechanisms finds which mechanisms the kernel lacks before any
// function is resolved, so that a kernel with none (a locked-down one) costs
// no symbol table and no attempt per function. fentry is tried on probeFn,
// unless attach rules it out.
func lackingMechanisms(attach Mechanism, probeFn string, l *layout.Layout) map[Mechanism]error {
	dead := map[Mechanism]error{}
	if _, err := os.Stat("/sys/bus/event_source/devices/kprobe/type"); err != nil {
		dead[Kprobe] = errors.New("this kernel has no kprobes (CONFIG_KPROBES)")
		dead[KprobeMulti] = dead[Kprobe]
	} else if err := features.HaveBPFLinkKprobeMulti(); errors.Is(err, ebpf.ErrNotSupported) {
		// Only ErrNotSupported is conclusive; on any other error, the
		// attach is tried and says what is wrong.
		dead[KprobeMulti] = fmt.Errorf("not supported by this kernel (%v)", err)
	}
	if attach == Auto || attach == Fentry {
		target, err := l.FuncTarget(probeFn)
		switch {
		case probeFn == "":
			dead[Fentry] = errors.New("no kernel BTF describes these functions")
		case err != nil:
			dead[Fentry] = err
		default:
			if lack := kernelLacks(Fentry, tryFentry(target)); lack != nil {
				dead[Fentry] = lack
			}
		}
	}
	return dead
}

// tryFentry attaches an empty fentry program to the function of BTF ID
// target and detaches it.
func tryFentry(target uint32) error {
	prog, err := loadProgram(&ebpf.ProgramSpec{
		Name: "skbstat_try", Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	}, target)
	if err != nil {
		return err
	}
	defer prog.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceFEntry})
	if err != nil {
		return err
	}
	return l.Close()
}

// mechanismOrder is the order auto tries the mechanisms in.
var mechanismOrder = []Mechanism{Fentry, KprobeMulti, Kprobe}

// noMechanism says why no mechanism that attach allows is left, or nil.
func noMechanism(attach Mechanism, dead map[Mechanism]error) error {
	var why []string
	for _, m := range mechanismOrder {
		if attach != Auto && attach != m {
			continue
		}
		if dead[m] == nil {
			return nil
		}
		why = append(why, fmt.Sprintf("%s: %v", m, dead[m]))
	}
	return errors.New(strings.Join(why, "; "))
}

var errSockDevice = errors.New("a socket-level row has no device to compare with -I")

// errNotInKernel says that a function is absent: never built, inlined into
// its callers, or renamed.
var errNotInKernel = errors.New("not in this kernel (inlined, renamed or not built)")

// resolveFunc finds where k attaches: its symbol (itself or its one compiler
// clone), and its argument position from BTF, else from the table.
func resolveFunc(l *layout.Layout, syms *kallsyms.Table, k kernelFunc) (funcTarget, error) {
	t := funcTarget{fn: k.name, symbol: k.name, sock: k.sock, proto: k.proto, received: k.section == Ingress, layout: l}
	if _, ok := syms.Address(k.name); !ok {
		clones := syms.Clones(k.name)
		if len(clones) != 1 {
			return t, errNotInKernel
		}
		t.symbol = clones[0]
	}
	argOf := l.FuncSkbArg
	if k.sock {
		argOf = l.FuncSockArg
	}
	arg, err := argOf(k.name)
	switch {
	case err == nil && t.symbol == k.name:
		t.arg, t.hasBTF = arg, true
	case err == nil || k.tableArg >= 0:
		// Without BTF the table (or -f NAME:N) is all there is. A clone
		// may have lost arguments, so its position is a guess either
		// way: BTF describes the original, the table old kernels.
		t.arg = k.tableArg
		if err == nil {
			t.arg = arg
		}
	default:
		return t, err
	}
	return t, nil
}

// funcOption is a -f value: NAME, or NAME:N, which gives the position N
// (from 0) of the function's struct sk_buff * argument for kernels without
// BTF to tell it.
type funcOption struct {
	name string
	arg  int // -1: not given
}

// parseFunc parses a -f value.
func parseFunc(s string) (funcOption, error) {
	name, pos, hasPos := strings.Cut(s, ":")
	if name == "" {
		return funcOption{}, errors.New("no function name")
	}
	fn := funcOption{name: name, arg: -1}
	if !hasPos {
		return fn, nil
	}
	// Unsigned: a sign, as in -1 or +1, is no position.
	n, err := strconv.ParseUint(pos, 10, 31)
	if err != nil {
		return funcOption{}, fmt.Errorf("%q is not an argument position (0 for the first argument, 1 for the second, ...)", pos)
	}
	fn.arg = int(n)
	return fn, nil
}

// CheckFunc checks a -f value, NAME or NAME:N, against the kernel: a
// function with a struct sk_buff * argument, at position N where that is
// given. Without BTF to say where the argument is, N must say it, and only
// a kprobe, which reads it from a register, can attach.
func CheckFunc(l *layout.Layout, value string) error {
	fn, err := parseFunc(value)
	if err != nil {
		return err
	}
	if !l.HasFuncBTF() {
		if fn.arg < 0 {
			return fmt.Errorf("this kernel has no BTF to tell the struct sk_buff * argument: give its position, -f %s:N (N from 0)", fn.name)
		}
		return checkRegisterArg(l, fn.arg)
	}
	arg, err := l.FuncSkbArg(fn.name)
	switch {
	case errors.Is(err, layout.ErrNotFound) && fn.arg >= 0:
		// BTF can lack a function that the kernel has (pahole leaves out
		// those whose prototypes it cannot trust): the position given is
		// all there is.
		return checkRegisterArg(l, fn.arg)
	case errors.Is(err, layout.ErrNotFound):
		return fmt.Errorf("no kernel function %s in the kernel's BTF", fn.name)
	case err == nil && fn.arg >= 0 && fn.arg != arg:
		return fmt.Errorf("the kernel's BTF puts the struct sk_buff * argument of %s at position %d, not %d", fn.name, arg, fn.arg)
	}
	return err
}

// checkRegisterArg checks that a kprobe can read argument i from a register.
func checkRegisterArg(l *layout.Layout, i int) error {
	_, err := l.KprobeArg(kernelArch(), i)
	return err
}

// kernelArch names the running kernel's architecture as the layout's kprobe
// argument table does (GOARCH names). It is the kernel's, not this binary's:
// a 32-bit binary may run on a 64-bit kernel, and a kprobe sees the kernel's
// registers.
func kernelArch() string {
	return archOfMachine(kernelMachine(), binary.NativeEndian.Uint16([]byte{1, 0}) == 1)
}

// kernelMachine is the kernel's machine name, as uname -m prints it. It reads
// /proc/sys/kernel/arch first, where the kernel has it (since 2022): uname
// tells a process in the PER_LINUX32 personality (linux32, setarch) the name
// of the kernel's 32-bit mode instead, i686 on x86_64, armv8l on arm64.
func kernelMachine() string {
	if b, err := os.ReadFile("/proc/sys/kernel/arch"); err == nil {
		return strings.TrimSpace(string(b))
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Machine[:])
}

// archOfMachine maps a kernel's machine name to its GOARCH name. MIPS
// kernels call themselves mips or mips64 in either byte order; but a MIPS
// kernel runs binaries of its own byte order only, so this binary's,
// littleEndian, is the kernel's.
func archOfMachine(machine string, littleEndian bool) string {
	switch machine {
	case "x86_64":
		return "amd64"
	case "i386", "i486", "i586", "i686":
		return "386"
	case "aarch64", "armv8l": // armv8l: what arm64 tells PER_LINUX32 processes
		return "arm64"
	case "loongarch64":
		return "loong64"
	case "mips", "mips64":
		if littleEndian {
			return machine + "le"
		}
		return machine
	}
	if strings.HasPrefix(machine, "arm") { // 32-bit: armv7l, armv6l, armv5tel, ...
		return "arm"
	}
	return machine // ppc64, ppc64le, riscv64 and s390x are their GOARCH names
}

// attachFunctions attaches the function probes with cfg.Attach: per
// function fentry, then what is left with kprobe.multi links, then with a
// kprobe each. dead holds the mechanisms known to be missing; one found
// missing on the way is not tried again for the other functions.
func (s *Set) attachFunctions(ps []*probe, cfg Config, dead map[Mechanism]error) {
	a := funcAttacher{s: s, cfg: cfg, arch: kernelArch(), errs: map[*probe]attempts{}, dead: dead}
	try := func(m Mechanism) bool { return cfg.Attach == Auto || cfg.Attach == m }
	pending := ps
	if try(Fentry) {
		pending = a.each(pending, Fentry, func(p *probe) (hook, error) { return p.fn.fentry() })
	}
	if try(KprobeMulti) {
		pending = a.multi(pending)
	}
	if try(Kprobe) {
		pending = a.each(pending, Kprobe, func(p *probe) (hook, error) { return p.fn.kprobe(a.arch) })
	}
	for _, p := range pending {
		s.record(Attachment{Section: p.section, Probe: p.name, Err: a.errs[p]})
	}
}

// funcAttacher tries the mechanisms on the function probes.
type funcAttacher struct {
	s    *Set
	cfg  Config
	arch string
	errs map[*probe]attempts // why each mechanism failed, per probe
	dead map[Mechanism]error // mechanisms this kernel lacks
}

func (a *funcAttacher) fail(p *probe, m Mechanism, err error) {
	a.errs[p] = append(a.errs[p], fmt.Errorf("%s: %w", m, err))
}

// errENOTSUPP is the kernel's internal ENOTSUPP (524), which some attach
// paths return and user-space headers do not name.
const errENOTSUPP = unix.Errno(524)

// kernelLacks turns an error that says the kernel lacks mechanism m, rather
// than one function, into the reason, or returns nil.
func kernelLacks(m Mechanism, err error) error {
	switch {
	case errors.Is(err, unix.EPERM) && m == Fentry:
		return fmt.Errorf("not permitted (%s)", permissionCause(err))
	case errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, errENOTSUPP), errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("not supported by this kernel (%v)", err)
	}
	return nil
}

// lockdownFile says whether the kernel is locked down: "none [integrity]
// confidentiality" marks the mode in force.
const lockdownFile = "/sys/kernel/security/lockdown"

// permissionCause says why the kernel refused function tracing: its
// lockdown where that is in force, else the refusal as it is (EPERM can have
// other causes, and says no more).
func permissionCause(err error) string {
	b, rerr := os.ReadFile(lockdownFile)
	if rerr != nil {
		return fmt.Sprintf("%v; whether the kernel is locked down cannot be told: %v", err, rerr)
	}
	mode := strings.TrimSpace(string(b))
	if i, j := strings.IndexByte(mode, '['), strings.IndexByte(mode, ']'); i >= 0 && j > i {
		mode = mode[i+1 : j]
	}
	if mode != "none" {
		return fmt.Sprintf("the kernel is locked down (%s), which forbids function tracing", mode)
	}
	return fmt.Sprintf("%v; the kernel is not locked down", err)
}

// each attaches each probe with its own hook; it returns those that failed.
func (a *funcAttacher) each(ps []*probe, m Mechanism, hookFor func(*probe) (hook, error)) (left []*probe) {
	for _, p := range ps {
		err := a.dead[m]
		var h hook
		if err == nil {
			if h, err = hookFor(p); err == nil {
				err = a.s.attachHook(p, h, a.cfg)
			}
			if lack := kernelLacks(m, err); lack != nil {
				a.dead[m], err = lack, lack
			}
		}
		if err != nil {
			a.fail(p, m, err)
			left = append(left, p)
			continue
		}
		a.s.record(Attachment{Section: p.section, Probe: p.name, Mechanism: h.mechanism()})
	}
	return left
}

// multiGroup is the probes that share a kprobe.multi link: same section
// (whose count of missed hits the link's is), same argument, same kind.
type multiGroup struct {
	section Section
	target  funcTarget
}

// multi attaches the probes that share a program with one kprobe.multi
// link per group.
func (a *funcAttacher) multi(ps []*probe) (left []*probe) {
	groups := map[multiGroup][]*probe{}
	var keys []multiGroup
	for _, p := range ps {
		key := multiGroup{section: p.section, target: funcTarget{arg: p.fn.arg, sock: p.fn.sock}}
		// Only socket-level programs depend on the transport and direction.
		if p.fn.sock {
			key.target.proto, key.target.received = p.fn.proto, p.fn.received
		}
		if groups[key] == nil {
			keys = append(keys, key)
		}
		groups[key] = append(groups[key], p)
	}
	for _, key := range keys {
		group := groups[key]
		err := a.dead[KprobeMulti]
		h := kprobeMultiHook{}
		if err == nil {
			h.arg, err = group[0].fn.kprobeArg(a.arch)
		}
		if err == nil {
			for _, p := range group {
				h.symbols = append(h.symbols, p.fn.symbol)
				h.rows = append(h.rows, uint64(p.row))
			}
			err = a.s.attachHook(group[0], h, a.cfg)
			if lack := kernelLacks(KprobeMulti, err); lack != nil {
				a.dead[KprobeMulti], err = lack, lack
			}
		}
		for _, p := range group {
			if err != nil {
				a.fail(p, KprobeMulti, err)
				left = append(left, p)
			} else {
				a.s.record(Attachment{Section: p.section, Probe: p.name, Mechanism: h.mechanism()})
			}
		}
	}
	return left
}
