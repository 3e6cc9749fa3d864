package output

import (
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// The JSON lines format: one object per interval, on one line.
type (
	jsonInterval struct {
		Time     string                 `json:"time"`    // the interval's end, RFC 3339 with microseconds
		Seconds  float64                `json:"seconds"` // the interval's length
		Sections map[string]jsonSection `json:"sections"`
	}
	jsonSection struct {
		Rows   []jsonRow   `json:"rows"`
		Stacks []jsonStack `json:"stacks"`
		Notes  []jsonNote  `json:"notes"`
	}
	jsonRow struct {
		Probe string `json:"probe"`
		Count uint64 `json:"count"`
	}
	jsonStack struct {
		Count       uint64   `json:"count"`
		Reason      string   `json:"reason"`
		Location    string   `json:"location"`
		Frames      []string `json:"frames"`
		LostStackID int64    `json:"lost_stack_id"`
	}
	jsonNote struct {
		Cause string `json:"cause"`
		Text  string `json:"text"`
		Count uint64 `json:"count"`
	}
)

// jsonTime is RFC 3339 with microseconds, always six digits.
const jsonTime = "2006-01-02T15:04:05.000000Z07:00"

// WriteJSON prints the sections of the interval of length that ended at end
// as one line of JSON: every row, stack and note given, zero counts
// included, rows by rank and stacks by count as Write prints them. The
// README describes the schema.
func WriteJSON(w io.Writer, end time.Time, length time.Duration, sections []Section) error {
	iv := jsonInterval{Time: end.Format(jsonTime), Seconds: length.Seconds(), Sections: map[string]jsonSection{}}
	for _, s := range sections {
		js := jsonSection{Rows: []jsonRow{}, Stacks: []jsonStack{}, Notes: []jsonNote{}}
		for _, r := range sortedRows(s.Rows) {
			js.Rows = append(js.Rows, jsonRow{r.Name, r.Count})
		}
		for _, st := range sortedStacks(s.Stacks) {
			frames := st.Frames
			if frames == nil {
				frames = []string{}
			}
			js.Stacks = append(js.Stacks, jsonStack{st.Count, st.Reason, st.Location, frames, st.LostID})
		}
		for _, n := range s.Notes {
			js.Notes = append(js.Notes, jsonNote{n.Cause, n.Text, n.Count})
		}
		iv.Sections[s.Name] = js
	}
	line, err := json.Marshal(iv)
	if err != nil {
		return fmt.Errorf("interval as JSON: %w", err)
	}
	if _, err := w.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("write interval: %w", err)
	}
	return nil
}
