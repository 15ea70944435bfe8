module biometrics.io/loadgen

go 1.19
