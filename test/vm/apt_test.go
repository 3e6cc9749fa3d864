package vm

import (
	"slices"
	"strings"
	"testing"
)

func TestParseIndexTargets(t *testing.T) {
	out := strings.Join([]string{
		"deb http://mirror.example/debian/ bookworm main",
		"deb http://mirror.example/debian/ bookworm main", // another architecture
		"deb http://mirror.example/debian/ bookworm-updates main",
		"deb http://mirror.example/debian/ bookworm contrib",
		"deb http://mirror.example/debian/ bookworm-backports main",
		"deb-src http://mirror.example/debian/ bookworm main",
		"deb http://security.example/debian-security/ bookworm-security main",
		"deb https://vendor.example/apt nodistro main",
		"",
	}, "\n")
	got := parseIndexTargets(out, "bookworm")
	want := []archiveSource{
		{"http://mirror.example/debian/", ""},
		{"http://mirror.example/debian/", "-updates"},
		{"http://security.example/debian-security/", "-security"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	sources := sourcesFile(got, "trixie")
	for _, line := range []string{"Suites: trixie\n", "Suites: trixie-updates\n", "Suites: trixie-security\n", "URIs: http://security.example/debian-security/\n", "Targets: Packages\n"} {
		if !strings.Contains(sources, line) {
			t.Errorf("sources for trixie lack %q:\n%s", line, sources)
		}
	}
	if strings.Contains(sources, "bookworm") {
		t.Errorf("sources for trixie name bookworm:\n%s", sources)
	}
}
