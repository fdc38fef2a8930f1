package cli

import (
	"bytes"
	"testing"
)

func TestSanitizingWriter(t *testing.T) {
	in := "line one\r\n\x1b[2Jcleared? no\n\x1b]0;title\x07ok\ttab é ü 日本\rback\n"
	want := "line one\n\uFFFD[2Jcleared? no\n\uFFFD]0;title\uFFFDok\ttab é ü 日本\uFFFDback\n"
	// Every split of the input into two writes, so that runes and CRLF
	// are cut in the middle.
	for i := 0; i <= len(in); i++ {
		var out bytes.Buffer
		w := &sanitizingWriter{w: &out}
		for _, part := range []string{in[:i], in[i:]} {
			if n, err := w.Write([]byte(part)); err != nil || n != len(part) {
				t.Fatalf("Write = %d, %v", n, err)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Fatalf("split at %d:\n got %q\nwant %q", i, out.String(), want)
		}
	}
	// Byte by byte.
	var out bytes.Buffer
	w := &sanitizingWriter{w: &out}
	for i := 0; i < len(in); i++ {
		w.Write([]byte{in[i]})
	}
	w.Flush()
	if out.String() != want {
		t.Fatalf("byte by byte:\n got %q\nwant %q", out.String(), want)
	}
	// A trailing CR or a cut rune at the very end is still written.
	out.Reset()
	w = &sanitizingWriter{w: &out}
	w.Write([]byte("end\r\xe6\x97"))
	w.Flush()
	if got := out.String(); got != "end\uFFFD\uFFFD\uFFFD" && got != "end\uFFFD\uFFFD" {
		t.Fatalf("trailing bytes: %q", got)
	}
}
