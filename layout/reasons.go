package layout

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/skbstat/skbstat/internal/rawbtf"
	"github.com/skbstat/skbstat/internal/tracefs"
)

// dropReasonPrefix starts every drop reason's name in enum skb_drop_reason.
const dropReasonPrefix = "SKB_DROP_REASON_"

// isSentinel reports whether a (prefix-stripped) enum skb_drop_reason name
// marks a bound rather than naming a reason.
func isSentinel(name string) bool {
	return name == "MAX" || name == "SUBSYS_MASK"
}

// DropReasons returns the names of the kernel's drop reasons by value, from
// BTF enum skb_drop_reason, without the SKB_DROP_REASON_ prefix (NO_SOCKET).
// The error wraps ErrNotFound on kernels without drop reasons (before
// 5.17).
func (l *Layout) DropReasons() (map[uint32]string, error) {
	reasonEnum, err := l.typeByName("skb_drop_reason", rawbtf.KindEnum)
	if errors.Is(err, rawbtf.ErrNotFound) {
		reasonEnum, err = l.typeByName("skb_drop_reason", rawbtf.KindEnum64)
	}
	if err != nil {
		return nil, fmt.Errorf("drop reasons: %w", err)
	}
	reasons := make(map[uint32]string, len(reasonEnum.Values))
	for _, v := range reasonEnum.Values {
		name, ok := strings.CutPrefix(v.Name, dropReasonPrefix)
		if !ok || isSentinel(name) || v.Value > math.MaxUint32 {
			continue
		}
		reasons[uint32(v.Value)] = name
	}
	return reasons, nil
}

// DropReasonsFromFormat returns the drop reason names listed in the print
// format of skb:kfree_skb, for kernels without BTF:
//
//	__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, ...)
//
// The map is empty where the format has no reasons.
func DropReasonsFromFormat(f *tracefs.Format) map[uint32]string {
	reasons := map[uint32]string{}
	_, rest, _ := strings.Cut(f.PrintFmt, "__print_symbolic(REC->reason,")
	for {
		entry, after, closed := strings.Cut(strings.TrimLeft(rest, " ,"), "}")
		if !closed || !strings.HasPrefix(entry, "{") {
			break
		}
		rest = after
		value, quoted, _ := strings.Cut(entry[1:], ",")
		v, err := strconv.ParseUint(strings.TrimSpace(value), 0, 32)
		name, errName := strconv.Unquote(strings.TrimSpace(quoted))
		// An enum the kernel did not resolve to a number names no value.
		if err != nil || errName != nil || isSentinel(name) {
			continue
		}
		reasons[uint32(v)] = name
	}
	return reasons
}

// Drop reasons of a subsystem (such as openvswitch) carry its number in the
// high bits; their names are in the subsystem's module, not in
// enum skb_drop_reason.
const (
	dropReasonSubsysMask  = 0xffff0000 // SKB_DROP_REASON_SUBSYS_MASK
	dropReasonSubsysShift = 16         // SKB_DROP_REASON_SUBSYS_SHIFT
)

// ReasonName returns the name of drop reason v in reasons. A value without a
// name is shown as SUBSYS_<subsystem>:0x<code> if it is a subsystem's (for
// example SUBSYS_2:0x5 for reason 5 of openvswitch), else in hex, as the
// kernel's own trace output shows unknown values (0x8c).
func ReasonName(reasons map[uint32]string, v uint32) string {
	if name, ok := reasons[v]; ok {
		return name
	}
	if v&dropReasonSubsysMask != 0 {
		return fmt.Sprintf("SUBSYS_%d:%#x", v>>dropReasonSubsysShift, v&^dropReasonSubsysMask)
	}
	return fmt.Sprintf("%#x", v)
}
