package pack

import (
	"bytes"
	"testing"

	"github.com/mse-in-go/mse/internal/bundle"
	"github.com/mse-in-go/mse/internal/bundle/bundletest"
)

// Code directories described as data, shared with the tests of package bundle.
type tree = bundletest.Tree

var sampleTree = bundletest.SampleTree

func writeTree(t testing.TB, dir string, tr tree) {
	t.Helper()
	bundletest.WriteTree(t, dir, tr)
}

func listTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	return bundletest.ListTree(t, dir)
}

func randomBytes(n int, seed uint64) []byte { return bundletest.RandomBytes(n, seed) }

func packBytes(t testing.TB, dir string, lim bundle.Limits) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := Pack(dir, &buf, lim); err != nil {
		t.Fatalf("Pack: %v", err)
	}
	return buf.Bytes()
}

func testKey(b byte) bundle.Key {
	var k bundle.Key
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

// tagSize is the size of the AES-GCM tag that ends every segment
// (docs/bundle-format.md).
const tagSize = 16

func flipBit(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}
