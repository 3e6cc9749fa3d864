// Package metrics keeps skbstat's running totals as Prometheus counters and
// writes them in the text exposition format, for a scrape (--listen) or
// node_exporter's textfile collector (--textfile).
//
// The counters are fed the counts of each interval and never reset, so they
// have counter semantics whatever the kernel maps hold. Label sets are
// bounded: drop and consume series (reason x location) are at most a given
// number; a series once exported stays, and the locations of series first
// seen beyond the bound are summed into location="other". Addresses and
// ports are never labels: the filter appears once, in skbstat_filter_info.
package metrics

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/skbstat/skbstat/output"
)

// Counters are skbstat's running totals. The zero value is not usable: use
// New. A Counters is safe for concurrent use.
type Counters struct {
	mu         sync.Mutex
	maxSeries  int
	info       Info
	packets    map[sectionProbe]uint64
	drops      map[reasonLocation]uint64
	consumed   map[reasonLocation]uint64 // reason is always ""
	lostStacks uint64
	notes      map[sectionCause]uint64
	probes     map[sectionMechanism]int
}

// Info is what skbstat_build_info and skbstat_filter_info say.
type Info struct {
	Version, GoArch string
	Filter          string // the filter, as filter.Filter's String prints it
}

type (
	sectionProbe     struct{ section, probe string }
	reasonLocation   struct{ reason, location string }
	sectionCause     struct{ section, cause string }
	sectionMechanism struct{ section, mechanism string }
)

// Other is the location of the series first seen beyond the bound.
const Other = "other"

// New returns counters that export at most maxSeries drop series and as
// many consume series.
func New(maxSeries int, info Info) *Counters {
	return &Counters{
		maxSeries: maxSeries, info: info,
		packets: map[sectionProbe]uint64{}, drops: map[reasonLocation]uint64{}, consumed: map[reasonLocation]uint64{},
		notes: map[sectionCause]uint64{}, probes: map[sectionMechanism]int{},
	}
}

// Attached counts a probe attached in section with mechanism, for
// skbstat_probes.
func (c *Counters) Attached(section, mechanism string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.probes[sectionMechanism{section, mechanism}]++
}

// Add adds one interval's counts.
func (c *Counters) Add(sections []output.Section) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range sections {
		for _, r := range s.Rows {
			c.packets[sectionProbe{s.Name, r.Name}] += r.Count
		}
		for _, st := range s.Stacks {
			if st.LostID != 0 {
				c.lostStacks += st.Count
			}
			switch s.Name {
			case "DROP":
				c.addSeries(c.drops, reasonLocation{cmp.Or(st.Reason, "unknown"), function(st.Location)}, st.Count)
			case "CONSUME":
				c.addSeries(c.consumed, reasonLocation{"", function(st.Location)}, st.Count)
			}
		}
		for _, n := range s.Notes {
			c.notes[sectionCause{s.Name, n.Cause}] += n.Count
		}
	}
}

// addSeries adds n to series k of m, or to its reason's "other" series once
// m holds maxSeries series and k is not one of them.
func (c *Counters) addSeries(m map[reasonLocation]uint64, k reasonLocation, n uint64) {
	if _, ok := m[k]; !ok && len(m) >= c.maxSeries {
		k.location = Other
	}
	m[k] += n
}

// function is the function of a location, as output.Function gives it;
// "unknown" where there is no location.
func function(location string) string {
	return cmp.Or(output.Function(location), "unknown")
}

// RecursionCause is the note cause that skbstat_recursion_misses_total
// counts rather than skbstat_uncounted_total.
const RecursionCause = "recursion_miss"

// Write writes every metric in the text exposition format.
func (c *Counters) Write(w io.Writer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b bytes.Buffer
	family(&b, "skbstat_packets_total", "counter", "Packets that matched the filter, per section and probe (row).")
	for _, k := range sortedKeys(c.packets, func(a, b sectionProbe) int {
		return cmp.Or(cmp.Compare(a.section, b.section), cmp.Compare(a.probe, b.probe))
	}) {
		sample(&b, "skbstat_packets_total", c.packets[k], "section", k.section, "probe", k.probe)
	}
	family(&b, "skbstat_drops_total", "counter", "Matching packets dropped, per drop reason and dropping function.")
	for _, k := range sortedKeys(c.drops, compareReasonLocation) {
		sample(&b, "skbstat_drops_total", c.drops[k], "reason", k.reason, "location", k.location)
	}
	family(&b, "skbstat_consumed_total", "counter", "Matching packets freed normally, per freeing function.")
	for _, k := range sortedKeys(c.consumed, compareReasonLocation) {
		sample(&b, "skbstat_consumed_total", c.consumed[k], "location", k.location)
	}
	family(&b, "skbstat_lost_stacks_total", "counter", "Counted drops and consumes whose kernel stack could not be recorded.")
	sample(&b, "skbstat_lost_stacks_total", c.lostStacks)
	var uncounted, recursion []sectionCause
	for _, k := range sortedKeys(c.notes, func(a, b sectionCause) int {
		return cmp.Or(cmp.Compare(a.section, b.section), cmp.Compare(a.cause, b.cause))
	}) {
		if k.cause == RecursionCause {
			recursion = append(recursion, k)
		} else {
			uncounted = append(uncounted, k)
		}
	}
	family(&b, "skbstat_uncounted_total", "counter", "Events no row or stack counts, per section and cause (full count map, undecided packet).")
	for _, k := range uncounted {
		sample(&b, "skbstat_uncounted_total", c.notes[k], "section", k.section, "cause", k.cause)
	}
	family(&b, "skbstat_recursion_misses_total", "counter", "Events the kernel skipped because a program was already running on the CPU, per section.")
	for _, k := range recursion {
		sample(&b, "skbstat_recursion_misses_total", c.notes[k], "section", k.section)
	}
	family(&b, "skbstat_probes", "gauge", "Probes attached, per section and attach mechanism.")
	for _, k := range sortedKeys(c.probes, func(a, b sectionMechanism) int {
		return cmp.Or(cmp.Compare(a.section, b.section), cmp.Compare(a.mechanism, b.mechanism))
	}) {
		sample(&b, "skbstat_probes", uint64(c.probes[k]), "section", k.section, "mechanism", k.mechanism)
	}
	family(&b, "skbstat_build_info", "gauge", "skbstat's version and architecture.")
	sample(&b, "skbstat_build_info", 1, "version", c.info.Version, "goarch", c.info.GoArch)
	family(&b, "skbstat_filter_info", "gauge", "The packet filter of this skbstat.")
	sample(&b, "skbstat_filter_info", 1, "filter", c.info.Filter)
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write metrics: %w", err)
	}
	return nil
}

func compareReasonLocation(a, b reasonLocation) int {
	return cmp.Or(cmp.Compare(a.reason, b.reason), cmp.Compare(a.location, b.location))
}

func sortedKeys[K comparable, V any](m map[K]V, compare func(a, b K) int) []K {
	return slices.SortedFunc(maps.Keys(m), compare)
}

func family(b *bytes.Buffer, name, kind, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
}

// sample writes one sample of name with labels, given as name, value pairs.
func sample(b *bytes.Buffer, name string, value uint64, labels ...string) {
	b.WriteString(name)
	for i := 0; i < len(labels); i += 2 {
		sep := ","
		if i == 0 {
			sep = "{"
		}
		fmt.Fprintf(b, "%s%s=\"%s\"", sep, labels[i], escape(labels[i+1]))
	}
	if len(labels) > 0 {
		b.WriteByte('}')
	}
	fmt.Fprintf(b, " %d\n", value)
}

// escape escapes a label value as the exposition format wants: backslash,
// double quote and line feed.
func escape(v string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v)
}
