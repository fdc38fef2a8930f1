//go:build !unix

package bundle

const oNoFollow = 0
