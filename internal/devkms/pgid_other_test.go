//go:build !linux

package devkms

import "errors"

func getpgid(int) (int, error) { return 0, errors.New("not on linux") }
