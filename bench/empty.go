package main

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// The tracepoint mechanisms the per-event cost is measured with: skbstat's
// first choice, its fallback, and bpftrace's.
const (
	tpBTF  = "tp_btf"
	rawTP  = "raw tracepoint"
	perfTP = "perf tracepoint"
)

// tracepointGroup is the group of a tracepoint skbstat attaches.
func tracepointGroup(name string) string {
	if name == "consume_skb" || name == "kfree_skb" {
		return "skb"
	}
	return "net"
}

// emptyPrograms loads a program that does nothing at each of names, with
// mechanism, and attaches it: the floor of every program's per-event cost
// there, mostly the statistics' own clock reads. It returns the programs
// by tracepoint and what to close.
func emptyPrograms(mechanism string, names []string) (map[string]*ebpf.Program, func(), error) {
	progs := map[string]*ebpf.Program{}
	var links []link.Link
	closeAll := func() {
		for _, l := range links {
			l.Close()
		}
		for _, p := range progs {
			p.Close()
		}
	}
	for _, name := range names {
		p, l, err := emptyProgram(mechanism, name)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("empty %s program at %s: %w", mechanism, name, err)
		}
		progs[name], links = p, append(links, l)
	}
	return progs, closeAll, nil
}

// emptyKprobeMulti loads one program that does nothing and attaches it to
// every function of fns through one kprobe.multi link, as skbstat's rows
// share one.
func emptyKprobeMulti(fns []string) (*ebpf.Program, link.Link, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "empty", Type: ebpf.Kprobe, AttachType: ebpf.AttachTraceKprobeMulti, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return nil, nil, err
	}
	l, err := link.KprobeMulti(p, link.KprobeMultiOptions{Symbols: fns})
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	return p, l, nil
}

// emptyProgram loads and attaches one empty program.
func emptyProgram(mechanism, name string) (*ebpf.Program, link.Link, error) {
	spec := &ebpf.ProgramSpec{
		Name:         "empty",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "GPL",
	}
	switch mechanism {
	case tpBTF:
		spec.Type, spec.AttachType, spec.AttachTo = ebpf.Tracing, ebpf.AttachTraceRawTp, name
	case "fentry":
		spec.Type, spec.AttachType, spec.AttachTo = ebpf.Tracing, ebpf.AttachTraceFEntry, name
	case "kprobe":
		spec.Type = ebpf.Kprobe
	case rawTP:
		spec.Type = ebpf.RawTracepoint
	case perfTP:
		spec.Type = ebpf.TracePoint
	default:
		return nil, nil, errors.New("unknown mechanism")
	}
	p, err := ebpf.NewProgram(spec)
	if err != nil {
		return nil, nil, err
	}
	var l link.Link
	switch mechanism {
	case tpBTF:
		l, err = link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
	case "fentry":
		l, err = link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceFEntry})
	case "kprobe":
		l, err = link.Kprobe(name, p, nil)
	case rawTP:
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: name, Program: p})
	default:
		l, err = link.Tracepoint(tracepointGroup(name), name, p, nil)
	}
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	return p, l, nil
}

// measureEmpty is measure for the empty programs of mechanism at names.
func measureEmpty(mechanism string, names []string, send func() error) (map[string]cost, error) {
	progs, closeAll, err := emptyPrograms(mechanism, names)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	return costWhile(progs, send)
}
