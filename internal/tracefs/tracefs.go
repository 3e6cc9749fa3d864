// Package tracefs finds (or mounts) the kernel's tracing file system and reads
// tracepoint format files: the field layout of a perf tracepoint's record and
// its print format. Kernels without BTF describe their tracepoints only here.
package tracefs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// defaultDir is where tracefs is mounted when it is not mounted anywhere.
// cilium/ebpf's perf tracepoint attach looks there, too.
const defaultDir = "/sys/kernel/tracing"

// Mount returns the directory where tracefs is mounted, mounting it at
// /sys/kernel/tracing first if it is mounted nowhere. It leaves the mount in
// place: other tools, and cilium/ebpf's tracepoint attach, use it afterwards.
//
// Call it before attaching any perf tracepoint: cilium/ebpf looks for tracefs
// once per process and remembers a failure.
func Mount() (string, error) {
	mounts, err := os.Open("/proc/mounts")
	if err != nil {
		return "", fmt.Errorf("find tracefs: %w", err)
	}
	defer mounts.Close()
	dir, err := findMount(mounts)
	if err != nil {
		return "", fmt.Errorf("find tracefs: %w", err)
	}
	if dir != "" {
		return dir, nil
	}
	if err := syscall.Mount("nodev", defaultDir, "tracefs", 0, ""); err != nil {
		return "", fmt.Errorf("tracefs is not mounted and mounting it failed (%w): run 'mount -t tracefs nodev %s'", err, defaultDir)
	}
	return defaultDir, nil
}

// findMount returns the first tracefs mount point listed in r, in the format
// of /proc/mounts, or "" if there is none.
func findMount(r io.Reader) (string, error) {
	scanner := bufio.NewScanner(r)
	for scanner.Scan() {
		// device mountpoint fstype options dump pass
		fields := strings.Fields(scanner.Text())
		if len(fields) >= 3 && fields[2] == "tracefs" {
			return unescapeMountPoint(fields[1]), nil
		}
	}
	return "", scanner.Err()
}

// unescapeMountPoint undoes the octal escapes (\040 for a space) that
// /proc/mounts uses for white space and backslashes in paths.
func unescapeMountPoint(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Field is one field of a perf tracepoint's record.
type Field struct {
	Name   string
	Type   string // C type as the kernel prints it, e.g. "void *", "__data_loc char[]"
	Offset uint32
	Size   uint32
	Signed bool
}

// Format is a tracepoint's format file.
type Format struct {
	Name     string
	ID       uint32  // perf event type id
	Fields   []Field // in record order, common_* fields first
	PrintFmt string  // everything after "print fmt: "
}

// Field returns the field called name.
func (f *Format) Field(name string) (Field, bool) {
	for _, field := range f.Fields {
		if field.Name == name {
			return field, true
		}
	}
	return Field{}, false
}

// ReadFormat reads the format of tracepoint group:name from tracefs mounted
// at dir.
func ReadFormat(dir, group, name string) (*Format, error) {
	for _, part := range []string{group, name} {
		if part == "" || part == "." || part == ".." || strings.ContainsRune(part, '/') {
			return nil, fmt.Errorf("tracepoint %s:%s: invalid name %q", group, name, part)
		}
	}
	file, err := os.Open(filepath.Join(dir, "events", group, name, "format"))
	if err != nil {
		return nil, fmt.Errorf("tracepoint %s:%s: %w", group, name, err)
	}
	defer file.Close()
	f, err := ParseFormat(file)
	if err != nil {
		return nil, fmt.Errorf("tracepoint %s:%s: %w", group, name, err)
	}
	return f, nil
}

// ParseFormat parses a tracepoint format file.
func ParseFormat(r io.Reader) (*Format, error) {
	f := &Format{}
	scanner := bufio.NewScanner(r)
	// The print fmt line of skb:kfree_skb lists every drop reason.
	scanner.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for line := 1; scanner.Scan(); line++ {
		text := strings.TrimSpace(scanner.Text())
		var err error
		switch {
		case strings.HasPrefix(text, "name:"):
			f.Name = strings.TrimSpace(strings.TrimPrefix(text, "name:"))
		case strings.HasPrefix(text, "ID:"):
			var id uint64
			id, err = strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(text, "ID:")), 10, 32)
			f.ID = uint32(id)
		case strings.HasPrefix(text, "field:"):
			var field Field
			field, err = parseField(text)
			f.Fields = append(f.Fields, field)
		case strings.HasPrefix(text, "print fmt:"):
			f.PrintFmt = strings.TrimSpace(strings.TrimPrefix(text, "print fmt:"))
		}
		if err != nil {
			return nil, fmt.Errorf("format line %d: %w", line, err)
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("read format: %w", err)
	}
	if len(f.Fields) == 0 {
		return nil, errors.New("format has no fields")
	}
	return f, nil
}

// parseField parses a line such as
//
//	field:void * skbaddr;	offset:8;	size:8;	signed:0;
func parseField(line string) (Field, error) {
	var (
		field                Field
		haveOffset, haveSize bool
	)
	for _, part := range strings.Split(line, ";") {
		key, value, _ := strings.Cut(strings.TrimSpace(part), ":")
		var err error
		switch key {
		case "field":
			field.Type, field.Name, err = splitDecl(value)
		case "offset":
			field.Offset, err = parseUint32(value)
			haveOffset = true
		case "size":
			field.Size, err = parseUint32(value)
			haveSize = true
		case "signed":
			field.Signed = value == "1"
		}
		if err != nil {
			return Field{}, fmt.Errorf("%q: %s: %w", line, key, err)
		}
	}
	if !haveOffset || !haveSize {
		return Field{}, fmt.Errorf("%q: no offset or size", line)
	}
	return field, nil
}

// splitDecl splits a C declaration such as "char comm[16]" into its type
// ("char[16]") and name ("comm").
func splitDecl(decl string) (typ, name string, err error) {
	i := strings.LastIndexAny(decl, " \t*")
	name = decl[i+1:]
	typ = strings.TrimSpace(decl[:i+1])
	if bracket := strings.IndexByte(name, '['); bracket >= 0 {
		typ += name[bracket:]
		name = name[:bracket]
	}
	if name == "" || typ == "" {
		return "", "", fmt.Errorf("declaration %q has no type or no name", decl)
	}
	return typ, name, nil
}

func parseUint32(s string) (uint32, error) {
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	return uint32(v), err
}
