package cli

import (
	"strings"
	"unicode"
)

// sanitize makes operator- or app-controlled text safe for a terminal: every
// control character (escape sequences, carriage returns, bells) becomes
// U+FFFD, except tab. Newlines are kept only with keepNewlines.
func sanitize(s string) string { return sanitizeText(s, false) }

func sanitizeText(s string, keepNewlines bool) string {
	clean := true
	for _, r := range s {
		if isUnsafe(r, keepNewlines) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if isUnsafe(r, keepNewlines) {
			b.WriteRune('\uFFFD')
			continue
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
