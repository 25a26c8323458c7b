#include <iostream>

#include "broker/cli/audit/audit_cli.h"

int main(int argc, char** argv) { return carebroker::RunAudit(argc, argv, std::cout, std::cerr); }
