package output

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
)

// WriteFolded prints the stacks of the sections given as folded stacks, the
// input of flame graph tools (flamegraph.pl, speedscope): one line per stack,
// "root;outermost;...;innermost count", with the drop reason (or, where
// there is none, the section's name) as the root and functions without
// offsets or modules. A lost stack's frames follow "[lost_stack]"; each
// note with a count is a line "SECTION;[cause] count", so that the lines of
// a section sum to its events. Counts by location (ByLocation) have the
// location as their one frame. Rows do not print.
func WriteFolded(w io.Writer, sections []Section) error {
	var b bytes.Buffer
	for _, s := range sections {
		for _, st := range sortedStacks(s.Stacks) {
			path := []string{cmp.Or(st.Reason, s.Name)}
			if st.LostID != 0 {
				path = append(path, "[lost_stack]")
			}
			frames := st.Frames
			if s.ByLocation && st.Location != "" {
				frames = []string{st.Location}
			}
			for _, f := range slices.Backward(frames) {
				path = append(path, Function(f))
			}
			fmt.Fprintf(&b, "%s %d\n", strings.Join(path, ";"), st.Count)
		}
		for _, n := range s.Notes {
			if n.Count > 0 {
				fmt.Fprintf(&b, "%s;[%s] %d\n", s.Name, n.Cause, n.Count)
			}
		}
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write interval: %w", err)
	}
	return nil
}

// Function is the function of a frame "func+0x12 [module]", without offset
// or module; an address that could not be symbolized stays as it is.
func Function(frame string) string {
	frame, _, _ = strings.Cut(frame, " ")
	fn, _, _ := strings.Cut(frame, "+")
	return fn
}
