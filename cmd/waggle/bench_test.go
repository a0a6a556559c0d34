package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/internal/kvmtest"
	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm"
)

// BenchmarkEnsureToFirstSerialByte measures, against a real `waggle server`
// process, the time from PUT /v1/instance through PUT /v1/instance/state
// {run} to the first byte of guest output on the console WebSocket. The
// reference, measured in the same run, is the VMM alone: vmm.New, Start and
// the first serial byte, with no server and no HTTP.
func BenchmarkEnsureToFirstSerialByte(b *testing.B) {
	kvmtest.Require(b)
	ctx := context.Background()
	var total time.Duration
	for range b.N {
		p := startServer(b)
		w, err := specDecode(`{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"boot":{"image":"ticker"},
		 "components":{"com1":{"type":"serial_port","num":"com1"}}}`)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		r, err := p.client.InstanceEnsureWithResponse(ctx, specEnsure(b, api.InstanceProperties{Id: uuid.New(), Name: "b"}, w))
		if err != nil || r.JSON201 == nil {
			b.Fatalf("ensure: %v %s", err, body(r))
		}
		ws, _, err := websocket.Dial(ctx, "ws://"+p.addr+"/v1/instance/serial", &websocket.DialOptions{HTTPHeader: httpkit.BearerHeader(p.token)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.client.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedRun}); err != nil {
			b.Fatal(err)
		}
		if _, _, err := ws.Read(ctx); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		ws.CloseNow()
		p.stop()
	}
	ref := refFirstByte(b)
	per := total / time.Duration(b.N)
	b.ReportMetric(float64(per.Microseconds()), "µs/first-byte")
	b.ReportMetric(float64(ref.Microseconds()), "ref-vmm-µs")
	b.ReportMetric(float64(per)/float64(ref), "x-ref")
	b.Logf("ensure -> running -> first serial byte: %v; bare vmm New+Start -> first byte: %v", per, ref)
}

// refFirstByte times vmm.New, Start and the first serial byte in-process.
func refFirstByte(b *testing.B) time.Duration {
	s, err := spec.NewBuilder().
		SetBoard(spec.Board{CPUs: 1, MemoryMiB: 64, Chipset: spec.ChipsetI440FX}).
		SetBoot(spec.Boot{Image: "ticker"}).
		Add(spec.MustKey("com1"), spec.SerialPort{Num: spec.COM1}).Build()
	if err != nil {
		b.Fatal(err)
	}
	first := make(chan struct{}, 1)
	start := time.Now()
	m, err := vmm.New(vmm.Config{Spec: s, Serial: map[spec.SerialPortNumber]io.Writer{spec.COM1: notifyWriter(first)}})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if err := m.Start(); err != nil {
		b.Fatal(err)
	}
	<-first
	return time.Since(start)
}

type notifyWriter chan struct{}

func (n notifyWriter) Write(p []byte) (int, error) {
	select {
	case n <- struct{}{}:
	default:
	}
	return len(p), nil
}
