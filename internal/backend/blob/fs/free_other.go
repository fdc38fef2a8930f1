//go:build !unix

package fs

func freeBytes(dir string) int64 { return -1 }
