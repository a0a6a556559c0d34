package sledagent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Process is a VMM server process the agent started or adopted.
type Process struct {
	Pid int

	done   chan struct{}
	mu     sync.Mutex
	status string
	signal syscall.Signal // the signal that killed it, if one did and it was our child
	// child: the agent started it; its pid stays its own until the
	// agent reaps it, which waits for exited to be set under mu.
	child  bool
	exited bool
	// pidfd refers to an adopted process (-1: none, or closed once it
	// ended); under mu. Signals sent through it never reach another
	// process that reused the pid.
	pidfd int
	// marks are arguments an adopted process's command line holds (its
	// token file), checked before signalling it without a pidfd.
	marks []string
}

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Status says how the process ended, in words ("exited with code 3",
// "was killed by signal 9 (killed)"); empty while it runs.
func (p *Process) Status() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

func (p *Process) end(status string, sig syscall.Signal) {
	p.mu.Lock()
	p.status, p.signal, p.exited = status, sig, true
	p.mu.Unlock()
	close(p.done)
}

// Kill kills the process with SIGKILL and waits until it has ended, or
// until wait passes. A process that has ended is not signalled at all: its
// pid may belong to another process by now.
//
// A child of the agent is killed with its whole group (it leads its own
// session): its pid cannot be reused before the agent reaps it, and the
// agent reaps it only after it is marked exited, under the same lock as
// the signal. An adopted process is someone else's to reap, so only it is
// signalled, through its pidfd, which never reaches a process that reused
// its pid (a VMM server starts no processes of its own). Without a pidfd
// (an old kernel) its group is signalled by pid only while its command
// line is still the one it was adopted with.
func (p *Process) Kill(wait time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.signalKill(); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(wait):
		return fmt.Errorf("VMM process %d did not end within %v of SIGKILL", p.Pid, wait)
	}
}

func (p *Process) signalKill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return nil
	}
	var err error
	switch {
	case p.child:
		err = syscall.Kill(-p.Pid, syscall.SIGKILL)
	case p.pidfd >= 0:
		err = unix.PidfdSendSignal(p.pidfd, unix.SIGKILL, nil, 0)
	case pidAlive(p.Pid) && len(p.marks) > 0 && cmdlineHas(p.Pid, p.marks...):
		err = syscall.Kill(-p.Pid, syscall.SIGKILL)
	default:
		return nil // gone, or no longer ours
	}
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill VMM process %d: %w", p.Pid, err)
	}
	return nil
}

// launch starts binary with args in a session of its own (so that it
// outlives the agent), its output appended to logPath.
func launch(binary string, args []string, logPath string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the VMM's log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Env = os.Environ()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	p := &Process{Pid: cmd.Process.Pid, done: make(chan struct{}), child: true, pidfd: -1}
	go func() {
		// Wait for the end without reaping, mark it, then reap: Kill
		// signals the group only while the pid is still this child's.
		var info unix.Siginfo
		for {
			err := unix.Waitid(unix.P_PID, p.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		p.mu.Lock()
		p.exited = true
		p.mu.Unlock()
		_ = cmd.Wait()
		status, sig := describeExit(cmd.ProcessState)
		p.end(status, sig)
	}()
	return p, nil
}

// describeExit says how a child ended.
func describeExit(ps *os.ProcessState) (string, syscall.Signal) {
	if ps == nil {
		return "ended", 0
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return fmt.Sprintf("was killed by signal %d (%v)", int(ws.Signal()), ws.Signal()), ws.Signal()
	}
	return fmt.Sprintf("exited with code %d", ps.ExitCode()), 0
}

// adopt watches a process this agent did not start (a VMM server started
// by an earlier run of the agent). Its exit status is not ours to read: a
// pidfd says when it ends, and is what Kill signals.
// marks are arguments its command line holds (checked by the caller
// already, and again before a signal when there is no pidfd).
func adopt(pid int, marks ...string) (*Process, error) {
	p := &Process{Pid: pid, done: make(chan struct{}), pidfd: -1, marks: marks}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("process %d is gone", pid)
		}
		// No pidfd (an old kernel): poll for the process instead.
		go func() {
			for pidAlive(pid) {
				time.Sleep(100 * time.Millisecond)
			}
			p.end("ended (it was not this agent's child: its exit status is unknown)", 0)
		}()
		return p, nil
	}
	p.pidfd = fd
	go func() {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, -1)
			if err == nil && n > 0 {
				break
			}
			if err != nil && !errors.Is(err, unix.EINTR) {
				break
			}
		}
		p.mu.Lock()
		unix.Close(p.pidfd)
		p.pidfd = -1
		p.mu.Unlock()
		p.end("ended (it was not this agent's child: its exit status is unknown)", 0)
	}()
	return p, nil
}

// pidAlive says whether a process with that pid exists (and is not a
// zombie).
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // no procfs: trust kill
	}
	// The state follows the command name's closing parenthesis.
	if i := bytes.LastIndexByte(data, ')'); i >= 0 && i+2 < len(data) {
		return data[i+2] != 'Z'
	}
	return true
}

// cmdlineHas says whether the process's command line holds every one of
// want among its arguments: a check that a pid still belongs to the VMM
// server the registry recorded, and not to a stranger that reused it.
func cmdlineHas(pid int, want ...string) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := map[string]bool{}
	for _, a := range bytes.Split(data, []byte{0}) {
		args[string(a)] = true
	}
	for _, w := range want {
		if !args[w] {
			return false
		}
	}
	return true
}

// pidsWithArg returns the processes whose command line holds arg as one
// of its arguments.
func pidsWithArg(arg string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if pidAlive(pid) && cmdlineHas(pid, arg) {
			pids = append(pids, pid)
		}
	}
	return pids
}
