package bundle

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// Seal, and Open and Check of sealed trees, are tested in package pack.

func TestCheckRefusesBadArchiveInsideGoodEncryption(t *testing.T) {
	key := testKey(7)
	for name, archive := range map[string][]byte{
		"dotdot":  makeTar(t, file("../x", "1")),
		"no end":  makeTar(t, file("a", "1"))[:512+512],
		"garbage": []byte("not a tar"),
	} {
		ct := encryptBytes(t, key, archive, testSeg)
		if _, err := Check(bytes.NewReader(ct), key, Limits{}); err == nil || !strings.Contains(err.Error(), "bundle archive") {
			t.Errorf("%s: Check = %v", name, err)
		}
	}
}

func TestDigestFileMissing(t *testing.T) {
	if _, _, err := DigestFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("DigestFile of a missing file")
	}
}
