package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// On Linux the command runs in a process group of its own, led by a guard:
// allot itself started as 'allot __guard', which does nothing while allot
// lives. Both get a parent-death signal, so that if allot dies — even by
// SIGKILL — the guard sends the whole group SIGTERM and, after the grace,
// SIGKILL: the command and everything it started stop, rather than run on
// while their slots go to the next holder. Without a guard (no allot
// executable to start it from) the command itself gets SIGKILL when allot
// dies, and what it started runs on.
//
// A parent-death signal is sent when the thread that forked the child
// exits, not the process; Go may end a thread when a goroutine locked to
// it returns. So the forks happen on a goroutine locked to its thread that
// stays until the command has exited.
//
// When allot runs in the foreground of a terminal and its stdin is that
// terminal (a person at a shell), the command stays in allot's process
// group instead, so that job control works as for any command: it can read
// the terminal, Ctrl-Z stops both and fg continues both, and Ctrl-C, which
// the terminal sends to the whole group, reaches the command once (allot
// does not pass SIGINT on then). Killing allot kills the command (by its
// parent-death signal) but not what the command started.

// guardCmd is the hidden subcommand a guard runs.
const guardCmd = "__guard"

// childSys is the Linux part of a child.
type childSys struct {
	guard *exec.Cmd
	// interactive: the command is in allot's process group, in the
	// foreground of a terminal.
	interactive bool
	release     chan struct{}
	done        chan struct{}
}

func (s *childSys) start(c *child, env Env, self string, grace time.Duration) error {
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if foregroundTTY(env.Stdin) {
		s.interactive = true
		attr.Setpgid, self = false, ""
	}
	c.cmd.SysProcAttr = attr
	s.release, s.done = make(chan struct{}), make(chan struct{})
	started := make(chan error, 1)
	go func() {
		defer close(s.done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if self != "" {
			if g, err := startGuard(self, grace); err != nil {
				// The command still dies with allot, by SIGKILL; what it
				// starts may not.
				fmt.Fprintf(env.Stderr, "allot: warning: could not start the guard of the command's process group: %v\n", err)
			} else {
				s.guard = g
				attr.Pgid = g.Process.Pid
				attr.Pdeathsig = syscall.SIGTERM // the guard escalates to SIGKILL
			}
		}
		err := c.cmd.Start()
		if err != nil {
			s.stopGuard()
		}
		started <- err
		if err == nil {
			<-s.release
		}
	}()
	return <-started
}

// startGuard starts 'self __guard' as the leader of a new process group and
// waits until it is ready to act on allot's death.
func startGuard(self string, grace time.Duration) (*exec.Cmd, error) {
	g := exec.Command(self, guardCmd, strconv.Itoa(os.Getpid()), grace.String())
	g.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	out, err := g.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := g.Start(); err != nil {
		return nil, err
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("guard said %q", line)
		}
		ready <- err // the guard closes its stdout after the line
	}()
	select {
	case err = <-ready:
	case <-time.After(10 * time.Second):
		err = errors.New("guard not ready after 10s")
	}
	if err != nil {
		_ = g.Process.Kill()
		_ = g.Wait()
		return nil, err
	}
	return g, nil
}

func (s *childSys) stopGuard() {
	if s.guard != nil {
		_ = s.guard.Process.Kill()
		_ = s.guard.Wait()
		s.guard = nil
	}
}

// signal sends sig to the command's whole process group; in a terminal,
// to the command alone, and SIGINT not at all (the terminal sent it to the
// command too).
func (s *childSys) signal(c *child, sig os.Signal) {
	n, ok := sig.(syscall.Signal)
	if s.interactive && sig == syscall.SIGINT {
		return
	}
	if !ok || s.interactive {
		_ = c.cmd.Process.Signal(sig)
		return
	}
	pgid := c.cmd.Process.Pid
	if s.guard != nil {
		pgid = s.guard.Process.Pid
	}
	_ = syscall.Kill(-pgid, n)
}

func (s *childSys) exited(c *child) {
	s.stopGuard()
	close(s.release)
	<-s.done
}

// foregroundTTY reports whether stdin is a terminal whose foreground
// process group is allot's.
func foregroundTTY(stdin io.Reader) bool {
	f, ok := stdin.(*os.File)
	if !ok || f == nil {
		return false
	}
	var pgrp int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgrp))); e != 0 {
		return false
	}
	return int(pgrp) == syscall.Getpgrp()
}

// runGuard is 'allot __guard PARENT GRACE': it leads the process group of
// allot run's command and waits. Signals sent to the group while allot
// (PARENT) lives are for the command and ignored here. Once allot is gone
// (the guard's parent-death signal), it sends the group SIGTERM, then
// SIGKILL after GRACE.
func runGuard(parent int, grace time.Duration) error {
	sigc := make(chan os.Signal, 8)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	signal.Ignore(syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	fmt.Println("ready")
	_ = os.Stdout.Close()
	for os.Getppid() == parent {
		<-sigc
	}
	pgid := syscall.Getpgrp()
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && othersInGroup(pgid) {
		time.Sleep(50 * time.Millisecond)
	}
	return syscall.Kill(-pgid, syscall.SIGKILL)
}

// othersInGroup reports whether a live process other than this one is in
// process group pgid.
func othersInGroup(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	me := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == me {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and ')'.
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		var state byte
		var ppid, pgrp int
		if _, err := fmt.Sscanf(s[i+1:], " %c %d %d", &state, &ppid, &pgrp); err != nil {
			continue
		}
		if pgrp == pgid && state != 'Z' {
			return true
		}
	}
	return false
}
