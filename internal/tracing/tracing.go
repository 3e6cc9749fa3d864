// Package tracing loads BPF tracing programs (tp_btf, fentry) against the
// BTF ID of their attach target, which the caller has found.
//
// cilium/ebpf takes a tracing program's target by name only, and looks it up
// in its own decoding of all of the kernel's BTF: 10-15 MiB of heap and about
// 15 ms on a 5 MB BTF, where skbstat's layout has found the ID already in an
// index a quarter that size (internal/rawbtf). Everything but the load itself
// (marshalling, the program's handle, attaching) stays cilium/ebpf's.
package tracing

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// progLoadAttr is union bpf_attr as BPF_PROG_LOAD reads it, up to
// attach_btf_obj_fd. Every u64 sits at a multiple of 8, so Go lays it out as
// the kernel does on 32-bit machines too.
type progLoadAttr struct {
	progType           uint32
	insnCnt            uint32
	insns              uint64
	license            uint64
	logLevel           uint32
	logSize            uint32
	logBuf             uint64
	kernVersion        uint32
	progFlags          uint32
	progName           [unix.BPF_OBJ_NAME_LEN]byte
	progIfindex        uint32
	expectedAttachType uint32
	progBTFFd          uint32
	funcInfoRecSize    uint32
	funcInfo           uint64
	funcInfoCnt        uint32
	lineInfoRecSize    uint32
	lineInfo           uint64
	lineInfoCnt        uint32
	attachBTFID        uint32
	attachBTFObjFd     uint32
	_                  uint32
}

// logSize is the verifier log's buffer when a load is refused: skbstat's
// programs are short, and the end of the log says why.
const logSize = 64 << 10

// Load loads spec, a program of type ebpf.Tracing, to attach to the kernel
// type target: for AttachTraceRawTp the typedef btf_trace_<tracepoint>, for
// AttachTraceFEntry the function. Its maps must be associated.
func Load(spec *ebpf.ProgramSpec, target uint32) (*ebpf.Program, error) {
	if spec.Type != ebpf.Tracing {
		return nil, fmt.Errorf("program %s is of type %s, not tracing", spec.Name, spec.Type)
	}
	if target == 0 {
		return nil, fmt.Errorf("program %s: no attach target", spec.Name)
	}
	var code bytes.Buffer
	if err := spec.Instructions.Marshal(&code, nativeOrder()); err != nil {
		return nil, fmt.Errorf("program %s: %w", spec.Name, err)
	}
	insns := code.Bytes()
	license := append([]byte(spec.License), 0)
	attr := progLoadAttr{
		progType:           unix.BPF_PROG_TYPE_TRACING,
		insnCnt:            uint32(len(insns) / 8),
		insns:              uint64(uintptr(unsafe.Pointer(&insns[0]))),
		license:            uint64(uintptr(unsafe.Pointer(&license[0]))),
		expectedAttachType: uint32(spec.AttachType),
		attachBTFID:        target,
	}
	copy(attr.progName[:unix.BPF_OBJ_NAME_LEN-1], spec.Name)
	fd, err := progLoad(&attr)
	if err != nil {
		// Loaded again with the verifier's log, only to say why.
		log := make([]byte, logSize)
		attr.logLevel, attr.logSize = 1, logSize
		attr.logBuf = uint64(uintptr(unsafe.Pointer(&log[0])))
		if _, errLogged := progLoad(&attr); errLogged != nil && log[0] != 0 {
			err = fmt.Errorf("%w: %s", err, lastLines(log, 2))
		}
		runtime.KeepAlive(log)
	}
	runtime.KeepAlive(insns)
	runtime.KeepAlive(license)
	if err != nil {
		return nil, fmt.Errorf("load program %s: %w", spec.Name, err)
	}
	// It owns fd from here, and closes it on error.
	prog, err := ebpf.NewProgramFromFD(fd)
	if err != nil {
		return nil, fmt.Errorf("program %s: %w", spec.Name, err)
	}
	return prog, nil
}

// nativeOrder is the machine's byte order as the encoder takes it: one of
// binary.LittleEndian and binary.BigEndian, not binary.NativeEndian.
func nativeOrder() binary.ByteOrder {
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
		return binary.LittleEndian
	}
	return binary.BigEndian
}

// progLoad makes the BPF_PROG_LOAD call, again where a signal interrupted
// the verifier (EAGAIN).
func progLoad(attr *progLoadAttr) (int, error) {
	for {
		fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(attr)), unsafe.Sizeof(*attr))
		runtime.KeepAlive(attr)
		switch errno {
		case 0:
			return int(fd), nil
		case unix.EAGAIN:
			continue
		}
		return -1, errno
	}
}

// lastLines is the last n lines of the NUL-terminated verifier log, joined
// by "; ", without the statistics that end it.
func lastLines(log []byte, n int) string {
	if i := bytes.IndexByte(log, 0); i >= 0 {
		log = log[:i]
	}
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	for len(lines) > 1 && (strings.HasPrefix(lines[len(lines)-1], "processed ") || strings.HasPrefix(lines[len(lines)-1], "verification time")) {
		lines = lines[:len(lines)-1]
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
