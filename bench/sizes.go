package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// target is an architecture skbstat is built for, with the settings a
// router's build needs: ARMv7, and MIPS without an FPU (routers' MIPS cores
// have none, and hard-float code would need the kernel's FPU emulation).
type target struct {
	goarch string
	env    []string // beyond GOARCH
	xz     bool     // routers keep it xz-compressed in flash
}

var targets = []target{
	{goarch: "amd64"},
	{goarch: "arm64"},
	{goarch: "arm", env: []string{"GOARM=7"}},
	{goarch: "mips", env: []string{"GOMIPS=softfloat"}, xz: true},
	{goarch: "mipsle", env: []string{"GOMIPS=softfloat"}, xz: true},
	{goarch: "mips64le"},
	{goarch: "ppc64le"},
	{goarch: "riscv64"},
	{goarch: "s390x"},
	{goarch: "386"},
	{goarch: "loong64"},
}

// The project's size goals.
const (
	goalStripped = 9e6   // bytes, stripped, amd64
	goalXz       = 2.5e6 // bytes, xz -9, mipsle
)

// binarySize is one target's stripped binary, and its xz -9 size where the
// target's flash holds it compressed (0 otherwise).
type binarySize struct {
	target
	stripped, xz int64
}

// binarySizes builds skbstat from src for every target into dir.
func binarySizes(src, dir string) ([]binarySize, error) {
	var sizes []binarySize
	for _, t := range targets {
		bin := filepath.Join(dir, "skbstat-"+t.goarch)
		if err := goBuild(src, bin, ".", append([]string{"GOARCH=" + t.goarch}, t.env...)...); err != nil {
			return nil, err
		}
		st, err := os.Stat(bin)
		if err != nil {
			return nil, err
		}
		s := binarySize{target: t, stripped: st.Size()}
		if t.xz {
			packed, err := exec.Command("xz", "-9", "-c", bin).Output()
			if err != nil {
				return nil, fmt.Errorf("xz -9 %s: %w", bin, err)
			}
			s.xz = int64(len(packed))
		}
		sizes = append(sizes, s)
		os.Remove(bin) // 7 MB each: the temporary directory need not hold them all
	}
	return sizes, nil
}

func printSizes(sizes []binarySize) {
	fmt.Println("## Binary size")
	fmt.Println()
	fmt.Println("stripped static skbstat: CGO_ENABLED=0 GOOS=linux go build -ldflags='-s -w'; MB = 10^6 bytes.")
	fmt.Println()
	fmt.Println("| GOARCH | settings | stripped | xz -9 | goal |")
	fmt.Println("|---|---|---|---|---|")
	for _, s := range sizes {
		xz, goal := "", ""
		if s.xz > 0 {
			xz = megabytes(s.xz)
		}
		switch s.goarch {
		case "amd64":
			goal = fmt.Sprintf("stripped <= %s: %s", megabytes(goalStripped), met(s.stripped <= goalStripped))
		case "mipsle":
			goal = fmt.Sprintf("xz <= %s: %s", megabytes(goalXz), met(s.xz <= goalXz))
		}
		fmt.Printf("| %s | %s | %s | %s | %s |\n", s.goarch, strings.Join(s.env, " "), megabytes(s.stripped), xz, goal)
	}
	fmt.Println()
}

func megabytes(n int64) string { return fmt.Sprintf("%.2f MB", float64(n)/1e6) }

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}
