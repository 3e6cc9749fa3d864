// Package progs generates skbstat's BPF programs, one per probe (one per
// group of functions on a kprobe.multi link), loads and attaches them, and
// reads what they counted.
//
// Every program has the same shape: find the skb in the context, run the
// filter on it, and count, either into a per-CPU row counter or per kernel
// stack (and drop reason). Row counters are never cleared: each Read
// returns the difference from the one before, so no event can fall between
// reading and clearing, and none is counted twice. Stacks are counted in
// two generations of maps, and each Read takes and clears the one that no
// program can still count in (see ageing.go).
//
// Load reads downwards: plan (plan.go), create the maps (maps.go), and for
// each probe generate its program (generate.go), load and attach it
// (load.go; kernel functions in funcs.go); then Read (set.go, ageing.go).
package progs

import (
	"fmt"
	"math"

	"github.com/skbstat/skbstat/filter"
	"github.com/skbstat/skbstat/layout"
)

// Section is one block of skbstat's output.
type Section uint32

// The sections, in print order.
const (
	Ingress Section = iota
	Egress
	Func // functions named with --func
	Consume
	Drop
	numSections
)

var sectionNames = [numSections]string{"INGRESS", "EGRESS", "FUNC", "CONSUME", "DROP"}

func (s Section) String() string { return sectionNames[s] }

// Config says what to probe and which packets to count.
type Config struct {
	Layout *layout.Layout
	Filter filter.Filter
	// Sections to probe. A section that is off has nothing attached.
	Ingress, Egress, Consume, Drop bool
	// Funcs are more kernel functions to count, in a FUNC section.
	Funcs []string
	// Attach says how kernel-function rows attach.
	Attach Mechanism
	// Locations: DROP and CONSUME count by location and reason only,
	// without walking the kernel stack, the most of a drop's cost.
	Locations bool
	// StackDepth is how many frames of the kernel stack DROP and CONSUME
	// record, at most MaxStackDepth; 0 is MaxStackDepth. The kernel walks
	// no further than that.
	StackDepth int
	// update is how the programs update counters, and alloc how the
	// stack counters get memory, chosen by Load.
	update counterUpdate
	alloc  Allocation
}

// probe is one source of counts: a row of an INGRESS, EGRESS or FUNC
// section, or the stacks of CONSUME or DROP.
type probe struct {
	section Section
	name    string // as printed: "net:netif_receive_skb"
	prog    string // BPF object name, at most 15 characters
	rank    int    // print order within the section
	// fromData: the kernel has not set skb->network_header yet here.
	fromData bool
	hooks    []func() (hook, error) // a tracepoint's hooks, best first
	fn       *funcTarget            // a kernel function's
	row      uint32                 // counter index, for row sections
}

func (p *probe) stacks() bool { return p.section == Consume || p.section == Drop }

// MaxStackDepth is the most frames a kernel stack records
// (PERF_MAX_STACK_DEPTH).
const MaxStackDepth = 127

// stackDepth is the frames cfg records.
func (cfg Config) stackDepth() uint32 {
	if cfg.StackDepth == 0 {
		return MaxStackDepth
	}
	return uint32(cfg.StackDepth)
}

// notWalked is the stack id of the events counted by location only
// (--locations): no stack map holds an id so large.
const notWalked int32 = math.MaxInt32

// Cause is why a section's events were counted apart from its rows and
// stacks, in a note of the section.
type Cause int

// The causes. Those before numNoted have a counter per section, after the
// rows, in the rows map.
const (
	CountMapFull  Cause = iota // the count map had no room for a new key
	CountNoMemory              // the kernel had no memory for a new key (see Allocation)
	// firstUndecided is the cause of filter.Undecided 0; the others follow.
	firstUndecided
	numNoted = firstUndecided + Cause(filter.NumUndecided)
	// AlreadyRunning: the kernel skipped the program because one was
	// running on the CPU. The kernel counts these, not a map.
	AlreadyRunning = numNoted
)

// Causes are every cause of a note, in print order.
func Causes() []Cause {
	cs := make([]Cause, AlreadyRunning+1)
	for i := range cs {
		cs[i] = Cause(i)
	}
	return cs
}

// Key names c for machines, in JSON and metrics: "count_map_full",
// "not_decided_ipv6_chain", "recursion_miss" (metrics.RecursionCause).
func (c Cause) Key() string {
	switch {
	case c >= firstUndecided && c < numNoted:
		return "not_decided_" + filter.Undecided(c-firstUndecided).Key()
	case c == AlreadyRunning:
		return "recursion_miss"
	case c == CountNoMemory:
		return "count_no_memory"
	}
	return "count_map_full"
}

// undecided is the cause of packets the filter could not decide for u.
func undecided(u filter.Undecided) Cause { return firstUndecided + Cause(u) }

func (c Cause) String() string {
	switch {
	case c == CountMapFull:
		return "not counted: count map full"
	case c == CountNoMemory:
		return "not counted: no kernel memory for a new count"
	case c >= firstUndecided && c < numNoted:
		return "not decided: " + filter.Undecided(c-firstUndecided).String()
	case c == AlreadyRunning:
		return "not counted: program already running on this CPU"
	}
	return fmt.Sprintf("cause %d", int(c))
}

// noteRow is the counter of section's events of cause c.
func noteRow(rows uint32, s Section, c Cause) uint32 {
	return rows + uint32(s)*uint32(numNoted) + uint32(c)
}
