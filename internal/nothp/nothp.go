// Package nothp keeps transparent huge pages out of skbstat's memory, from
// as early as an import can: main imports it for that side effect.
//
// Where the kernel gives huge pages to every anonymous mapping (THP
// "always", as in Debian's kernels), a heap of a few MiB sits in whole
// 2 MiB pages: 3-6 MiB more peak RSS, measured in the VM matrix.
// GODEBUG=disablethp=1 would cover the runtime's first pages too, but only
// from the environment: a //go:debug line cannot set it.
package nothp

import "golang.org/x/sys/unix"

func init() {
	// An error leaves huge pages as the kernel gives them: nothing worse.
	_ = unix.Prctl(unix.PR_SET_THP_DISABLE, 1, 0, 0, 0)
}
