// Package bundle is the node side of the bundle format: code keys, the
// streaming encryption, and the reader of the archive that an encrypted
// bundle holds.
//
// The owner side, which packs a code directory (minus the rules in .mseignore
// files) into the deterministic archive and seals it, is package
// internal/bundle/pack. It lives apart so that the node, the trusted computing
// base, does not link what only owners run (the .mseignore matcher among it).
//
// Encrypt and Decrypt use Tink's AES256_GCM_HKDF streaming AEAD under a
// 256-bit code key, so memory use does not depend on the size of the code,
// every segment is authenticated, and truncation is detected. The code digest
// is the SHA-256 of the encrypted bundle file (DigestFile).
//
// Check, Open and Unpack treat the archive as untrusted input: they refuse
// anything that could write outside the target directory, and bound sizes and
// counts with Limits.
//
// The wire format is specified in docs/bundle-format.md; testdata/ holds the
// good_* and fail_* vectors that specification refers to.
package bundle
