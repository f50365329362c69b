"""uhrops model zoo: FCtL and WSDNet built on uhrops ops, with data, training and evaluation."""
