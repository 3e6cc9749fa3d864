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
