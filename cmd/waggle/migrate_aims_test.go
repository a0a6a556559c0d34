package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWrittenAims: a written guest's row is judged against each of the
// issue's aims at its boundary (70% of loopback, half of QEMU's total,
// 1 ms of downtime), and a total without a QEMU figure is not judged.
func TestWrittenAims(t *testing.T) {
	row := migrationRow{
		name: "1GiB-written1016MiB", written: true, loopbackBPS: 3e9,
		throughput: 2.1e9, total: 999 * time.Millisecond, downtime: 999 * time.Microsecond,
		qemu: qemuRow{measured: true, total: 2 * time.Second, downtime: 150 * time.Millisecond, throughput: 0.4e9, version: "7.2.22", accel: "kvm"},
	}
	verdicts := func(r migrationRow) map[string]string {
		v := map[string]string{}
		for _, a := range writtenAims(r) {
			v[a.what] = a.verdict
		}
		return v
	}
	require.Equal(t, map[string]string{"throughput": "met", "total": "met", "downtime": "met"}, verdicts(row))

	under := row
	under.throughput = 2.09e9 // just under 70% of 3 GB/s
	under.total = time.Second // not under half of QEMU's 2 s
	under.downtime = time.Millisecond
	require.Equal(t, map[string]string{"throughput": "not met", "total": "not met", "downtime": "not met"}, verdicts(under))

	noQEMU := row
	noQEMU.qemu = qemuRow{note: "no QEMU: qemu-system-x86_64 not on PATH"}
	v := verdicts(noQEMU)
	require.Equal(t, "not judged", v["total"])
	require.Equal(t, "met", v["throughput"])

	noLoop := row
	noLoop.loopbackBPS = 0
	require.Equal(t, "not met", verdicts(noLoop)["throughput"], "no loopback figure meets no aim")

	aims := writtenAims(row)
	require.Equal(t, "2.10 GB/s, 70% of loopback", aims[0].figure)
	require.Equal(t, ">= 70% of loopback (2.10 GB/s)", aims[0].limit)
	require.Equal(t, "< half of QEMU's 2000 ms (1000 ms)", aims[1].limit)
	require.Equal(t, "0.999 ms", aims[2].figure)
}

// TestMigrationTable: every row is printed, a skipped one with its reason,
// and the aims follow for the written rows that ran, and only for them.
func TestMigrationTable(t *testing.T) {
	rows := []migrationRow{
		{name: "1GiB-idle", loopbackBPS: 3e9, total: 25 * time.Millisecond, downtime: 700 * time.Microsecond, bytes: 100 << 10,
			qemu: qemuRow{note: "not measured"}},
		{name: "1GiB-written1016MiB", written: true, loopbackBPS: 3e9, throughput: 0.5e9, bytes: 1020 << 20,
			total: 2 * time.Second, downtime: 900 * time.Microsecond, qemu: qemuRow{note: "not measured"}},
		{name: "4GiB-written3068MiB", written: true, skipped: "needs 12 GiB of available memory"},
	}
	out := migrationTable(3e9, rows)
	require.Contains(t, out, "loopback TCP 3.00 GB/s")
	require.Contains(t, out, "| 1GiB-idle | 25.0 ms | 0.700 ms | 0.1 MiB | – | – | not measured |")
	require.Contains(t, out, "| 1GiB-written1016MiB | 2000.0 ms | 0.900 ms | 1020.0 MiB | 0.50 GB/s | 17% | not measured |")
	require.Contains(t, out, "| 4GiB-written3068MiB | skipped: needs 12 GiB of available memory |")
	require.Equal(t, 1, strings.Count(out, "against the issue's aims"))
	require.Contains(t, out, "1GiB-written1016MiB against the issue's aims")
	require.Contains(t, out, "| throughput | 0.50 GB/s, 17% of loopback | >= 70% of loopback (2.10 GB/s) | not met |")
	require.Contains(t, out, "| downtime | 0.900 ms | < 1 ms (idle guest) | met |")
	require.Contains(t, out, "| total | 2000.0 ms | < half of QEMU's (QEMU: not measured) | not judged |")
}

// TestRoomForSmallRows: a row that asks for no memory always runs; one that
// asks more than any host has is skipped, saying how much it needs.
func TestRoomForSmallRows(t *testing.T) {
	require.Empty(t, roomFor(migrationCase{name: "1GiB-idle", mib: 1024}))
	why := roomFor(migrationCase{name: "huge", mib: 4096, minAvailMiB: 1 << 40})
	require.Contains(t, why, "needs 1073741824 GiB of available memory")
}
