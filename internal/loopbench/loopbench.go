// Package loopbench measures what one TCP stream over 127.0.0.1 carries on
// this host: the ceiling a live migration's stream, sent and received on the
// same machine, cannot beat. Benchmarks measure it in the same run as the
// migration they compare with it, with the buffer sizes the migration uses.
package loopbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Config is one measurement.
type Config struct {
	// Bytes is how much the stream carries; it must be positive.
	Bytes int64
	// WriteSize is the size of each write on the sending side, and
	// ReadSize of the buffer each read on the receiving side fills; both
	// must be positive. The migration writes at most 1 MiB at a time and
	// reads through a 1 MiB buffer (server/migrate_stream.go).
	WriteSize, ReadSize int
}

// Result is one measurement.
type Result struct {
	// Bytes is how much the receiver read: Config.Bytes, exactly.
	Bytes int64
	// Elapsed is from the first write to the receiver's last read.
	Elapsed time.Duration
}

// BytesPerSecond is the stream's throughput.
func (r Result) BytesPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) / r.Elapsed.Seconds()
}

// Measure sends cfg.Bytes over one TCP connection on 127.0.0.1, from one
// goroutine to another, and returns how long the receiver took to read them
// all. The connection and listener are closed when it returns; ctx bounds
// the whole.
func Measure(ctx context.Context, cfg Config) (Result, error) {
	switch {
	case cfg.Bytes <= 0:
		return Result{}, fmt.Errorf("loopbench: Bytes %d: must be positive", cfg.Bytes)
	case cfg.WriteSize <= 0:
		return Result{}, fmt.Errorf("loopbench: WriteSize %d: must be positive", cfg.WriteSize)
	case cfg.ReadSize <= 0:
		return Result{}, fmt.Errorf("loopbench: ReadSize %d: must be positive", cfg.ReadSize)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return Result{}, fmt.Errorf("loopbench: listening: %w", err)
	}
	defer ln.Close()

	type received struct {
		n   int64
		at  time.Time
		err error
	}
	got := make(chan received, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- received{err: fmt.Errorf("accepting: %w", err)}
			return
		}
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
		buf := make([]byte, cfg.ReadSize)
		var n int64
		for {
			k, err := c.Read(buf)
			n += int64(k)
			if errors.Is(err, io.EOF) {
				got <- received{n: n, at: time.Now()}
				return
			}
			if err != nil {
				got <- received{n: n, err: fmt.Errorf("receiving after %d bytes: %w", n, err)}
				return
			}
		}
	}()

	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return Result{}, fmt.Errorf("loopbench: dialing: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	buf := make([]byte, cfg.WriteSize)
	for i := range buf {
		buf[i] = byte(i) // not all zero, though loopback does not care
	}
	start := time.Now()
	var sent int64
	for sent < cfg.Bytes {
		k, err := c.Write(buf[:min(int64(len(buf)), cfg.Bytes-sent)])
		sent += int64(k)
		if err != nil {
			c.Close()
			<-got
			return Result{}, fmt.Errorf("loopbench: sending after %d bytes: %w", sent, errors.Join(err, ctx.Err()))
		}
	}
	// The receiver sees EOF once everything is in.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		c.Close()
		<-got
		return Result{}, fmt.Errorf("loopbench: closing the sending side: %w", err)
	}
	r := <-got
	c.Close()
	if r.err != nil {
		return Result{}, fmt.Errorf("loopbench: %w", errors.Join(r.err, ctx.Err()))
	}
	if r.n != cfg.Bytes {
		return Result{}, fmt.Errorf("loopbench: received %d bytes of %d", r.n, cfg.Bytes)
	}
	return Result{Bytes: r.n, Elapsed: r.at.Sub(start)}, nil
}
