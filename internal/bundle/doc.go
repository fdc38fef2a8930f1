// Package bundle turns an app owner's code directory into an encrypted bundle
// and back.
//
// Packing walks the directory (minus the rules in .mseignore files) and writes
// a deterministic tar archive: entries in canonical order, normalized modes,
// owners and times, only regular files and directories. Sealing encrypts that
// archive under a fresh 256-bit code key with Tink's AES256_GCM_HKDF streaming
// AEAD, so memory use does not depend on the size of the code, every segment
// is authenticated, and truncation is detected. The code digest is the SHA-256
// of the encrypted bundle file.
//
// The node side (Check, Open, Unpack) treats the archive as untrusted input: it
// refuses anything that could write outside the target directory, and bounds
// sizes and counts with Limits.
//
// The wire format is specified in docs/bundle-format.md; testdata/ holds the
// good_* and fail_* vectors that specification refers to.
package bundle
