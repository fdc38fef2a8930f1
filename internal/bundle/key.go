package bundle

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
)

// KeySize is the size of a code key in bytes.
const KeySize = 32

// Key is a code key: 32 uniformly random bytes, one per bundle.
//
// A Key formats as a redacted placeholder with every fmt verb, so that it
// cannot end up in an error message or a log line by accident. Use Hex to
// encode it on purpose.
type Key [KeySize]byte

// NewKey returns a fresh random code key.
func NewKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("generating a code key: %w", err)
	}
	return k, nil
}

// ParseKey decodes a code key written by Key.Hex: 64 hexadecimal characters.
// Surrounding white space (such as the newline at the end of a key file) is
// ignored. Errors never repeat the input.
func ParseKey(s string) (Key, error) {
	s = strings.TrimSpace(s)
	if len(s) != 2*KeySize {
		return Key{}, fmt.Errorf("a code key is %d hexadecimal characters (%d bytes); got %d characters", 2*KeySize, KeySize, len(s))
	}
	var k Key
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return Key{}, fmt.Errorf("a code key is %d hexadecimal characters (0-9, a-f); this one has other characters", 2*KeySize)
	}
	if k.IsZero() {
		return Key{}, errZeroKey
	}
	return k, nil
}

// Hex returns the key as 64 lowercase hexadecimal characters.
func (k Key) Hex() string { return hex.EncodeToString(k[:]) }

// IsZero reports whether k is the all-zero key, which is never a valid code
// key (it is what an uninitialized Key holds).
func (k Key) IsZero() bool {
	var zero Key
	return subtle.ConstantTimeCompare(k[:], zero[:]) == 1
}

// Equal reports whether k and o are the same key, in constant time.
func (k Key) Equal(o Key) bool { return subtle.ConstantTimeCompare(k[:], o[:]) == 1 }

// String returns a placeholder, never the key.
func (k Key) String() string { return "bundle.Key(REDACTED)" }

// GoString returns a placeholder, never the key.
func (k Key) GoString() string { return k.String() }

// Format prints a placeholder for every verb (%x and %d included).
func (k Key) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

var errZeroKey = fmt.Errorf("the code key is all zeros: it was never generated (use a key from bundle.NewKey)")
