// Package output prints one interval of skbstat's counts in the format of the
// original skbstat.py, to the character:
//
//	TIME     NUM    FUNC/STACK
//	17:53:34        [DROP]
//	         3      NO_SOCKET
//	                sk_skb_reason_drop+0x5
//	                udp_queue_rcv_one_skb+0x3c2
//
// Two choices follow the seed example (skbstat_example.txt) where the
// original's Python formats would differ: lines have no trailing spaces (a
// count line without a reason is "         1", not "         1     "), and
// each section ends with an empty line instead of starting with one, so the
// first header is the first line of the output.
package output

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"slices"
	"time"
)

// Row is the count of one kernel function or tracepoint in a section.
type Row struct {
	// Name is a function name ("ip_rcv") or a tracepoint ("net:net_dev_xmit").
	Name string
	// Rank orders the rows of a section: the path of a packet, from the
	// socket down to the device for INGRESS and in send order for EGRESS.
	Rank  int
	Count uint64
}

// Stack is the count of one kernel stack, with its drop reason, in a section.
type Stack struct {
	Count uint64
	// Reason is the drop reason ("NO_SOCKET"); empty where there is none.
	Reason string
	// Location names the function that freed the skb, in its caller
	// ("__udp4_lib_rcv+0x4bc"); empty where the tracepoint gives none.
	Location string
	// Frames are the symbolized return addresses, leaf first. Where the
	// kernel gave no usable stack, the one frame is the location: the
	// return address of the function that freed the skb, in its caller.
	// With neither, there are none, and the stack prints a line that says
	// so.
	Frames []string
	// LostID is non-zero when the kernel could not record the stack: it is
	// the (negative) error bpf_get_stackid returned, for example -17
	// (EEXIST) for a hash collision. It prints before the frames.
	LostID int64
}

// Section is one block of an interval's output, such as INGRESS or DROP.
type Section struct {
	Name   string
	Rows   []Row
	Stacks []Stack
	// ByLocation: the stacks are counts by location and reason, with no
	// frames, and print one line each: "12     NO_SOCKET  __udp4_lib_rcv+0x4bc".
	ByLocation bool
	// Notes are the section's events that its rows and stacks do not
	// count, such as those that found the count map full.
	Notes []Note
}

// Note is a number of events that a section saw but could not count in a
// row or a stack, and why: "not counted: count map full". It prints in the
// NUM column, after the rows and stacks, so that no event is missing from
// a section's total.
type Note struct {
	Count uint64
	Text  string
	// Cause names the kind of note for machines: "count_map_full".
	Cause string
}

// Write prints the sections in the order given, each one even when it is
// empty, with now as the time of the interval in now's own location. Rows
// print by rank, ascending; stacks by count, ascending, so that the most
// frequent comes last. Rows and notes that counted nothing do not print, as
// in the original. The slices of sections are not modified.
func Write(w io.Writer, now time.Time, sections []Section) error {
	var b bytes.Buffer
	clock := now.Format(time.TimeOnly)
	for _, s := range sections {
		fmt.Fprintf(&b, "%-8s %-6s %s\n", "TIME", "NUM", "FUNC/STACK")
		fmt.Fprintf(&b, "%-8s %-6s [%s]\n", clock, "", s.Name)
		for _, r := range sortedRows(s.Rows) {
			if r.Count > 0 {
				fmt.Fprintf(&b, "%-8s %-6d %s\n", "", r.Count, r.Name)
			}
		}
		for _, st := range sortedStacks(s.Stacks) {
			if s.ByLocation {
				writeLocation(&b, st)
			} else {
				writeStack(&b, st)
			}
		}
		for _, n := range s.Notes {
			if n.Count > 0 {
				fmt.Fprintf(&b, "%-8s %-6d [%s]\n", "", n.Count, n.Text)
			}
		}
		b.WriteByte('\n')
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write interval: %w", err)
	}
	return nil
}

func writeStack(b *bytes.Buffer, s Stack) {
	if s.Reason == "" {
		fmt.Fprintf(b, "%-8s %d\n", "", s.Count)
	} else {
		fmt.Fprintf(b, "%-8s %-6d %s\n", "", s.Count, s.Reason)
	}
	if s.LostID != 0 {
		fmt.Fprintf(b, "%-8s %-6s [lost kernel stack id %d]\n", "", "", s.LostID)
	}
	if len(s.Frames) == 0 {
		fmt.Fprintf(b, "%-8s %-6s [no location: the kernel gave no usable stack]\n", "", "")
	}
	for _, f := range s.Frames {
		fmt.Fprintf(b, "%-8s %-6s %s\n", "", "", f)
	}
}

func sortedRows(rows []Row) []Row { return slices.SortedFunc(slices.Values(rows), compareRows) }

func sortedStacks(stacks []Stack) []Stack {
	return slices.SortedFunc(slices.Values(stacks), compareStacks)
}

// writeLocation prints a count by location and reason on one line.
func writeLocation(b *bytes.Buffer, s Stack) {
	place := cmp.Or(s.Location, "[no location: the kernel gives none]")
	if s.Reason != "" {
		place = s.Reason + "  " + place
	}
	fmt.Fprintf(b, "%-8s %-6d %s\n", "", s.Count, place)
}

func compareRows(a, b Row) int {
	return cmp.Or(cmp.Compare(a.Rank, b.Rank), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Count, b.Count))
}

func compareStacks(a, b Stack) int {
	return cmp.Or(
		cmp.Compare(a.Count, b.Count),
		cmp.Compare(a.Reason, b.Reason),
		slices.Compare(a.Frames, b.Frames),
		cmp.Compare(a.LostID, b.LostID),
	)
}
