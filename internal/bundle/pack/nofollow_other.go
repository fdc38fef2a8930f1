//go:build !unix

package pack

const oNoFollow = 0
