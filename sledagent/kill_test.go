package sledagent

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// stranger starts a process in a session of its own, as an unrelated
// program that reused a VMM's pid (and so its group id) would be; it is
// killed and reaped at the end of the test.
// Its channel is closed when it has ended.
func stranger(t *testing.T) (*exec.Cmd, chan struct{}) {
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, cmd.Start())
	ended := make(chan struct{})
	go func() {
		var info unix.Siginfo
		_ = unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		close(ended)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-ended
		_ = cmd.Wait()
	})
	return cmd, ended
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// A process that has ended is never signalled again: its pid (and group
// id) may be another program's by now. Whether it was the agent's child or
// adopted, Kill returns at once.
func TestKillEndedSignalsNothing(t *testing.T) {
	other, ended := stranger(t)
	for _, p := range []*Process{
		{Pid: other.Process.Pid, done: make(chan struct{}), child: true, pidfd: -1},
		{Pid: other.Process.Pid, done: make(chan struct{}), pidfd: -1, marks: []string{"60"}},
	} {
		p.end("exited with code 0", 0)
		start := time.Now()
		require.NoError(t, p.Kill(5*time.Second))
		require.Less(t, time.Since(start), time.Second)
	}
	assert.Never(t, func() bool { return isClosed(ended) }, 300*time.Millisecond, 10*time.Millisecond, "a reused pid was signalled")
}

// A child that exited but is not reaped yet is still marked exited before
// it is reaped: Kill signals nothing once the pid may be reused.
func TestKillChild(t *testing.T) {
	dir := t.TempDir()
	p, err := launch("sleep", []string{"60"}, dir+"/log")
	require.NoError(t, err)
	require.NoError(t, p.Kill(10*time.Second))
	require.Contains(t, p.Status(), "signal 9")
	require.NoError(t, p.Kill(time.Second), "a second kill is no error")
}

// An adopted process is killed through its pidfd; once it ended, the
// pidfd is closed and a stranger with the same pid would not be touched.
func TestKillAdopted(t *testing.T) {
	victim, _ := stranger(t)
	p, err := adopt(victim.Process.Pid, "60")
	require.NoError(t, err)
	require.NoError(t, p.Kill(10*time.Second))
	assert.Eventually(t, func() bool {
		select {
		case <-p.Done():
			return true
		default:
			return false
		}
	}, 10*time.Second, 5*time.Millisecond)
	p.mu.Lock()
	require.Equal(t, -1, p.pidfd, "the pidfd is closed once the process ended")
	p.mu.Unlock()
}
