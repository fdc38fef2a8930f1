//go:build unix

package pack

import "syscall"

const oNoFollow = syscall.O_NOFOLLOW
