module biometrics.io/pprof-target

go 1.19
