package cli

import (
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// sanitize makes operator- or app-controlled text safe for a terminal: every
// control character (escape sequences, carriage returns, bells), bidi
// override and byte that is not UTF-8 becomes U+FFFD, except tab. Newlines are kept only with keepNewlines.
func sanitize(s string) string { return sanitizeText(s, false) }

func sanitizeText(s string, keepNewlines bool) string {
	if utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return isUnsafe(r, keepNewlines) }) < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	// Ranging over a string yields U+FFFD for each byte that is not valid
	// UTF-8 (a lone 0x9b is CSI to an 8-bit terminal): written out, it
	// replaces the byte.
	for _, r := range s {
		if isUnsafe(r, keepNewlines) {
			r = unicode.ReplacementChar
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isUnsafe(r rune, keepNewlines bool) bool {
	switch {
	case r == '\t', r == '\n' && keepNewlines:
		return false
	case r == unicode.ReplacementChar:
		return false
	case unicode.IsControl(r), r == '\u2028', r == '\u2029', r == '\u202e', r == '\u202d', r == '\u2066', r == '\u2067', r == '\u2068', r == '\u2069':
		return true
	}
	return false
}

// sanitizingWriter passes text through sanitizeText, keeping newlines, for
// a stream that arrives in arbitrary chunks (mse cloud logs -f): a rune or
// a CRLF split across writes is held until the next one. CRLF becomes LF;
// any other control character becomes U+FFFD.
type sanitizingWriter struct {
	w    io.Writer
	hold []byte // an incomplete UTF-8 sequence, or a trailing CR
}

func (s *sanitizingWriter) Write(p []byte) (int, error) {
	buf := append(s.hold, p...)
	s.hold = nil
	// Hold back what may continue in the next write.
	cut := len(buf)
	if cut > 0 && buf[cut-1] == '\r' {
		cut--
	} else if i := incompleteRuneStart(buf); i >= 0 {
		cut = i
	}
	s.hold = append([]byte(nil), buf[cut:]...)
	text := strings.ReplaceAll(string(buf[:cut]), "\r\n", "\n")
	if _, err := io.WriteString(s.w, sanitizeText(text, true)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes what is held (at the end of the stream).
func (s *sanitizingWriter) Flush() error {
	if len(s.hold) == 0 {
		return nil
	}
	text := sanitizeText(string(s.hold), true)
	s.hold = nil
	_, err := io.WriteString(s.w, text)
	return err
}

// incompleteRuneStart is the index where a UTF-8 sequence that b ends in
// the middle of starts, or -1.
func incompleteRuneStart(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			return -1
		}
	}
	return -1
}
