package bundle

import "io"

// SetPackFunc gives the internal tests the owner side's Pack (see packFunc).
func SetPackFunc(f func(dir string, w io.Writer, lim Limits) (Stats, error)) { packFunc = f }
