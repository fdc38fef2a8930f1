//go:build !unix

package router

import "net"

func waitReadable(net.Conn) error { return nil }
