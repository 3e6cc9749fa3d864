package vm

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Options.Packages: Debian packages of the kernel's own suite and
// architecture, unpacked with all their dependencies into the initramfs, so
// that a dynamically linked tool (bpftrace) runs in the guest as it would on
// that Debian release. Nothing is installed: no maintainer scripts run, and
// the unpacked trees are cached per .deb.

// dependencies returns pkgs and every package they depend on, recursively
// (Depends and Pre-Depends, no Recommends), each once. Virtual packages,
// which apt-cache prints as <name>, are left out: it lists the packages that
// provide them as well.
func (r aptRoot) dependencies(ctx context.Context, pkgs []string) ([]string, error) {
	args := append(r.options(), "depends", "--recurse", "--no-recommends", "--no-suggests",
		"--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances")
	out, err := output(ctx, "", "apt-cache", append(args, pkgs...)...)
	if err != nil {
		return nil, err
	}
	var deps []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == ' ' || line[0] == '<' || seen[line] {
			continue
		}
		seen[line] = true
		deps = append(deps, line)
	}
	return deps, nil
}

// packageTrees returns the unpacked trees of pkgs and their dependencies,
// downloading and unpacking what the cache lacks.
func (c *cache) packageTrees(ctx context.Context, root aptRoot, pkgs []string) ([]string, error) {
	var trees []string
	err := root.retryWithFreshLists(ctx, func() error {
		deps, err := root.dependencies(ctx, pkgs)
		if err != nil {
			return err
		}
		trees = trees[:0]
		for _, pkg := range deps {
			tree, err := c.unpacked(ctx, root, pkg)
			if err != nil {
				return fmt.Errorf("package %s: %w", pkg, err)
			}
			trees = append(trees, tree)
		}
		return nil
	})
	return trees, err
}

// unpacked returns pkg's files, unpacked once into unpacked/ARCH/DEB. The
// documentation under /usr/share is left out: the guest's memory holds the
// initramfs.
func (c *cache) unpacked(ctx context.Context, root aptRoot, pkg string) (string, error) {
	deb, err := c.deb(ctx, root, pkg)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(c.dir, "unpacked", root.arch, strings.TrimSuffix(filepath.Base(deb), ".deb"))
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	err = c.extract(ctx, root, pkg, dir, func(tree, out string) error {
		for _, d := range []string{"doc", "man", "info", "locale", "lintian", "bug"} {
			if err := os.RemoveAll(filepath.Join(tree, "usr", "share", d)); err != nil {
				return err
			}
		}
		if err := os.Remove(out); err != nil {
			return err
		}
		return os.Rename(tree, out)
	})
	return dir, err
}

// addTree copies the tree at dir into the archive at /: its directories,
// regular files and symbolic links.
func (c *cpioWriter) addTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := "/" + filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			c.dir(name)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			c.symlink(name, target)
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			return c.hostFile(name, p, fi.Mode().Perm())
		}
		return c.err
	})
}
