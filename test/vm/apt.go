package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// debianKeyring is the Debian archive keyring, which holds the keys of
// every current suite; without it apt uses the machine's trusted keys.
const debianKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// aptRoot is a private apt configuration for one suite and architecture,
// in its own directory: its own sources, package lists, download cache
// and (empty) dpkg status, so that the machine's apt setup is untouched.
type aptRoot struct {
	dir, suite, arch string
}

// options are the apt-get and apt-cache options that select the root.
// The machine's apt.conf.d still applies (proxies, validity checks).
func (r aptRoot) options() []string {
	var opts []string
	for _, o := range []string{
		"Dir::Etc::SourceList=/dev/null",
		"Dir::Etc::SourceParts=" + filepath.Join(r.dir, "sources.list.d"),
		"Dir::Etc::Preferences=/dev/null",
		"Dir::Etc::PreferencesParts=" + filepath.Join(r.dir, "preferences.d"),
		"Dir::State::Lists=" + filepath.Join(r.dir, "lists"),
		"Dir::State::status=" + filepath.Join(r.dir, "status"),
		"Dir::Cache=" + filepath.Join(r.dir, "cache"),
		"APT::Architecture=" + r.arch,
		"APT::Architectures=" + r.arch,
		"Acquire::Languages=none",
		// apt-get download writes to a root-owned directory; the _apt
		// user could not.
		"APT::Sandbox::User=root",
	} {
		opts = append(opts, "-o", o)
	}
	return opts
}

// setup writes the root's configuration, and fetches its package lists
// when it has none yet, when the sources changed, or when refresh is set.
func (r aptRoot) setup(ctx context.Context, sources string, refresh bool) error {
	for _, d := range []string{"sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o755); err != nil {
			return err
		}
	}
	status := filepath.Join(r.dir, "status")
	if _, err := os.Stat(status); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(status, nil, 0o644); err != nil {
			return err
		}
	}
	file := filepath.Join(r.dir, "sources.list.d", "debian.sources")
	old, _ := os.ReadFile(file)
	if string(old) != sources {
		if err := os.WriteFile(file, []byte(sources), 0o644); err != nil {
			return err
		}
		refresh = true
	}
	lists, _ := filepath.Glob(filepath.Join(r.dir, "lists", "*_Packages*"))
	if refresh || len(lists) == 0 {
		return r.update(ctx)
	}
	return nil
}

func (r aptRoot) update(ctx context.Context) error {
	if err := runLogged(ctx, "", "apt-get", append(r.options(), "update")...); err != nil {
		return fmt.Errorf("%s %s package lists: %w", r.suite, r.arch, err)
	}
	return nil
}

// retryWithFreshLists runs f, and once more after fetching the package
// lists if it fails: cached lists may name packages the archive has
// since replaced.
func (r aptRoot) retryWithFreshLists(ctx context.Context, f func() error) error {
	err := f()
	if err == nil {
		return nil
	}
	if uerr := r.update(ctx); uerr != nil {
		return errors.Join(err, uerr)
	}
	return f()
}

// dependency returns meta's first dependency that starts with prefix:
// for linux-image-cloud-amd64, the versioned kernel package.
func (r aptRoot) dependency(ctx context.Context, meta, prefix string) (string, error) {
	out, err := output(ctx, "", "apt-cache", append(r.options(), "depends", "--no-recommends", "--no-suggests", meta)...)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		dep, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Depends: ")
		if ok && strings.HasPrefix(dep, prefix) {
			return dep, nil
		}
	}
	return "", fmt.Errorf("%s in %s %s depends on no %s* package", meta, r.suite, r.arch, prefix)
}

// download fetches pkg's .deb into dir and returns its path.
func (r aptRoot) download(ctx context.Context, pkg, dir string) (string, error) {
	if err := runLogged(ctx, dir, "apt-get", append(r.options(), "download", pkg)...); err != nil {
		return "", err
	}
	debs, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s left %d .deb files in %s", pkg, len(debs), dir)
	}
	return debs[0], nil
}

// archiveSource is one entry of the machine's Debian sources: its
// archive and its suite's suffix ("", "-updates" or "-security").
type archiveSource struct {
	uri, suffix string
}

// hostSources returns the machine's Debian archive entries for its own
// release (codename, codename-updates, codename-security), read through
// apt so that every sources format and location counts.
func hostSources(ctx context.Context) (codename string, sources []archiveSource, err error) {
	osRelease, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return "", nil, err
	}
	codename = osReleaseField(string(osRelease), "VERSION_CODENAME")
	if codename == "" {
		return "", nil, errors.New("/etc/os-release has no VERSION_CODENAME")
	}
	out, err := output(ctx, "", "apt-get", "indextargets", "--format", "$(TARGET_OF) $(REPO_URI) $(RELEASE) $(COMPONENT)", "Identifier: Packages")
	if err != nil {
		return "", nil, err
	}
	sources = parseIndexTargets(out, codename)
	if len(sources) == 0 {
		return "", nil, fmt.Errorf("the machine's apt sources have no %s main entry to derive the Debian archive from", codename)
	}
	return codename, sources, nil
}

// parseIndexTargets keeps the deb entries of main for codename and its
// updates and security suites, each suite named relative to codename
// ("-updates"), once.
func parseIndexTargets(out, codename string) []archiveSource {
	var sources []archiveSource
	seen := map[archiveSource]bool{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "deb" || f[3] != "main" {
			continue
		}
		suffix, ok := strings.CutPrefix(f[2], codename)
		if !ok || (suffix != "" && suffix != "-updates" && suffix != "-security") {
			continue
		}
		s := archiveSource{uri: f[1], suffix: suffix}
		if !seen[s] {
			seen[s] = true
			sources = append(sources, s)
		}
	}
	return sources
}

// sourcesFile returns the deb822 sources for suite, one entry per
// machine entry with the machine's codename replaced by suite. Only the
// Packages index is fetched.
func sourcesFile(sources []archiveSource, suite string) string {
	var b strings.Builder
	signedBy := ""
	if _, err := os.Stat(debianKeyring); err == nil {
		signedBy = "Signed-By: " + debianKeyring + "\n"
	}
	for i, s := range sources {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nTargets: Packages\n%s", s.uri, suite+s.suffix, signedBy)
	}
	return b.String()
}

func osReleaseField(text, key string) string {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}

// shortArgs formats a command's arguments for messages, without the
// long -o options that select a private apt root.
func shortArgs(args []string) string {
	var kept []string
	for i := 0; i < len(args); i++ {
		if args[i] == "-o" {
			i++
			continue
		}
		kept = append(kept, args[i])
	}
	return strings.Join(kept, " ")
}
