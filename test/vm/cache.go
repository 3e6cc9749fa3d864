package vm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// DefaultCache is where kernels and busybox are kept unless the
// environment variable SKBSTAT_VM_CACHE names another directory.
// SKBSTAT_VM_REFRESH=1 fetches the package lists again, to move to the
// archive's current kernels.
const DefaultCache = "/var/cache/skbstat-vm"

// image is a kernel ready to boot, with what its initramfs needs.
type image struct {
	pkg     string // kernel package, e.g. linux-image-6.1.0-56-cloud-amd64
	vmlinuz string
	modules string // the package's lib/modules/RELEASE directory
	busybox string // static busybox for the kernel's architecture
	// packages are the unpacked trees of Options.Packages and their
	// dependencies.
	packages []string
}

// cache is the locked cache directory.
type cache struct {
	dir     string
	lock    *os.File
	refresh bool
}

// openCache creates and locks the cache. The lock (flock, so it also
// holds between test processes) is held while anything is fetched.
func openCache() (*cache, error) {
	dir, err := cacheDir()
	if err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		lock.Close()
		return nil, fmt.Errorf("cache: lock %s: %w", lock.Name(), err)
	}
	return &cache{dir: dir, lock: lock, refresh: os.Getenv("SKBSTAT_VM_REFRESH") == "1"}, nil
}

func (c *cache) close() { c.lock.Close() }

// cacheDir returns the cache directory, created if need be.
func cacheDir() (string, error) {
	dir := os.Getenv("SKBSTAT_VM_CACHE")
	if dir == "" {
		dir = DefaultCache
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	return dir, nil
}

// prepare returns k's kernel, modules and busybox, and the unpacked
// packages of k's suite, fetching what the cache does not have yet.
func prepare(ctx context.Context, k Kernel, packages []string) (image, error) {
	for _, tool := range [][2]string{{"apt-get", "apt"}, {"dpkg-deb", "dpkg"}} {
		if _, err := exec.LookPath(tool[0]); err != nil {
			return image{}, fmt.Errorf("%s is missing (package %s): kernels come from the Debian archive", tool[0], tool[1])
		}
	}
	c, err := openCache()
	if err != nil {
		return image{}, err
	}
	defer c.close()

	codename, sources, err := hostSources(ctx)
	if err != nil {
		return image{}, fmt.Errorf("find the Debian archive: %w", err)
	}
	root, err := c.aptRoot(ctx, sources, k.Suite, k.Arch)
	if err != nil {
		return image{}, err
	}
	var img image
	err = root.retryWithFreshLists(ctx, func() error {
		pkg, err := root.dependency(ctx, k.Meta, "linux-image-")
		if err != nil {
			return err
		}
		if img, err = c.kernel(ctx, root, pkg); err != nil {
			return fmt.Errorf("kernel package %s: %w", pkg, err)
		}
		return nil
	})
	if err != nil {
		return image{}, err
	}
	if len(packages) > 0 {
		if img.packages, err = c.packageTrees(ctx, root, packages); err != nil {
			return image{}, fmt.Errorf("packages %s of %s: %w", strings.Join(packages, ", "), k.Suite, err)
		}
	}
	// One busybox per architecture, from the machine's own suite.
	bbRoot, err := c.aptRoot(ctx, sources, codename, k.Arch)
	if err != nil {
		return image{}, err
	}
	err = bbRoot.retryWithFreshLists(ctx, func() error {
		img.busybox, err = c.busybox(ctx, bbRoot)
		return err
	})
	if err != nil {
		return image{}, fmt.Errorf("busybox-static %s: %w", k.Arch, err)
	}
	return img, nil
}

// aptRoot returns the private apt configuration for suite and arch,
// with package lists.
func (c *cache) aptRoot(ctx context.Context, sources []archiveSource, suite, arch string) (aptRoot, error) {
	r := aptRoot{dir: filepath.Join(c.dir, "apt", suite+"-"+arch), suite: suite, arch: arch}
	if err := r.setup(ctx, sourcesFile(sources, suite), c.refresh); err != nil {
		return r, fmt.Errorf("apt for %s %s: %w", suite, arch, err)
	}
	return r, nil
}

// kernel returns pkg's kernel and modules, extracted once into
// kernels/PKG.
func (c *cache) kernel(ctx context.Context, root aptRoot, pkg string) (image, error) {
	dir := filepath.Join(c.dir, "kernels", pkg)
	img := image{pkg: pkg, vmlinuz: filepath.Join(dir, "vmlinuz"), modules: filepath.Join(dir, "modules")}
	if _, err := os.Stat(img.vmlinuz); err == nil {
		return img, nil
	}
	err := c.extract(ctx, root, pkg, dir, func(tree, out string) error {
		kernels, _ := filepath.Glob(filepath.Join(tree, "boot", "vmlinuz-*"))
		if len(kernels) != 1 {
			return fmt.Errorf("want one boot/vmlinuz-*, found %d", len(kernels))
		}
		release := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
		modules, err := firstExisting(
			filepath.Join(tree, "lib", "modules", release),
			filepath.Join(tree, "usr", "lib", "modules", release))
		if err != nil {
			return err
		}
		if err := os.Rename(modules, filepath.Join(out, "modules")); err != nil {
			return err
		}
		return os.Rename(kernels[0], filepath.Join(out, "vmlinuz"))
	})
	return img, err
}

// busybox returns the static busybox of root's architecture.
func (c *cache) busybox(ctx context.Context, root aptRoot) (string, error) {
	dir := filepath.Join(c.dir, "busybox", root.arch)
	path := filepath.Join(dir, "busybox")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	err := c.extract(ctx, root, "busybox-static", dir, func(tree, out string) error {
		bin, err := firstExisting(filepath.Join(tree, "bin", "busybox"), filepath.Join(tree, "usr", "bin", "busybox"))
		if err != nil {
			return err
		}
		return os.Rename(bin, filepath.Join(out, "busybox"))
	})
	return path, err
}

// extract downloads pkg (unless its .deb is cached), unpacks it, lets
// keep move what is needed from the unpacked tree to a new directory,
// and puts that directory at dir. Nothing is left half-done at dir.
func (c *cache) extract(ctx context.Context, root aptRoot, pkg, dir string, keep func(tree, out string) error) error {
	deb, err := c.deb(ctx, root, pkg)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(c.dir, ".extract-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	tree, out := filepath.Join(work, "tree"), filepath.Join(work, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return err
	}
	if err := runLogged(ctx, "", "dpkg-deb", "-x", deb, tree); err != nil {
		return err
	}
	if err := keep(tree, out); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(deb), err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	return os.Rename(out, dir)
}

// deb returns the cached .deb of pkg, downloading it if needed.
func (c *cache) deb(ctx context.Context, root aptRoot, pkg string) (string, error) {
	dir := filepath.Join(c.dir, "debs", root.arch)
	if debs, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb")); len(debs) > 0 {
		return debs[len(debs)-1], nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	work, err := os.MkdirTemp(dir, ".download-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	deb, err := root.download(ctx, pkg, work)
	if err != nil {
		return "", err
	}
	final := filepath.Join(dir, filepath.Base(deb))
	return final, os.Rename(deb, final)
}

func firstExisting(paths ...string) (string, error) {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("none of %s exists", strings.Join(paths, ", "))
}
